"""The application layer: the `rmp` command line and the demo.

The only place (with bench/) that wires the domain packages (ingest,
analytics, transform) together; nothing below imports it.
"""
