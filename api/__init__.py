"""The metrics HTTP API: a thin read-only layer over the tenant views, marts and analytics tables.

Every request runs in its own transaction under ``SET LOCAL ROLE`` to the role
its bearer token stands for, so PostgreSQL's row-level security and the
``tenant.*`` views decide what it sees (docs/api.md).
"""
