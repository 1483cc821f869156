"""Writers of a synthetic fleet: its tenancy rows (upserted), its series through
the COPY loader, its anomaly labels as JSON, or its series as CSV/NDJSON/Parquet
files that ``rmp ingest`` reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psycopg

from ingest.fleet_model import AnomalyLabel
from ingest.frames import frame_columns
from ingest.generator import Fleet
from ingest.loader import load_columns
from rmp import db
from rmp.catalog import SERVER_METRIC_COLUMNS, SITE_USAGE_COLUMNS


def write_tenancy(conn: psycopg.Connection, fleet: Fleet) -> None:
    """Upsert the fleet's tenancy rows (idempotent: natural keys) and fill
    ``fleet.server_ids`` / ``fleet.site_ids``. ``conn`` is in autocommit mode."""
    with conn.transaction():
        org_ids: dict[str, int] = {}
        for o in fleet.organizations:        # parents come before their children
            org_ids[o.slug] = conn.execute(
                "insert into tenancy.organizations (name, slug, parent_id) values (%s, %s, %s) "
                "on conflict (slug) do update set name = excluded.name, parent_id = excluded.parent_id "
                "returning id",
                (o.name, o.slug, org_ids.get(o.parent) if o.parent else None),
            ).fetchone()[0]
        for u in fleet.users:
            uid = conn.execute(
                "insert into tenancy.users (email, full_name) values (%s, %s) "
                "on conflict (email) do update set full_name = excluded.full_name returning id",
                (u.email, u.full_name),
            ).fetchone()[0]
            conn.execute(
                "insert into tenancy.memberships (user_id, organization_id, role) values (%s, %s, %s) "
                "on conflict (user_id, organization_id) do update set role = excluded.role",
                (uid, org_ids[u.organization], u.role),
            )
        for s in fleet.servers:
            fleet.server_ids[(s.organization, s.name)] = conn.execute(
                "insert into tenancy.servers (organization_id, name, hostname, cpu_cores, memory_total_bytes, "
                "disk_total_bytes) values (%s, %s, %s, %s, %s, %s) "
                "on conflict (organization_id, name) do update set hostname = excluded.hostname, "
                "cpu_cores = excluded.cpu_cores, memory_total_bytes = excluded.memory_total_bytes, "
                "disk_total_bytes = excluded.disk_total_bytes returning id",
                (org_ids[s.organization], s.name, s.hostname, s.cpu_cores, s.memory_total_bytes,
                 s.disk_total_bytes),
            ).fetchone()[0]

        def find_or_insert(table: str, key_cols: tuple[str, ...], values: dict) -> int:
            from psycopg import sql
            where = sql.SQL(" and ").join(
                sql.SQL("{} is not distinct from {}").format(sql.Identifier(c), sql.Placeholder(c))
                for c in key_cols)
            found = conn.execute(sql.SQL("select id from tenancy.{} where {} limit 1").format(
                sql.Identifier(table), where), values).fetchone()
            if found:
                return found[0]
            return conn.execute(sql.SQL("insert into tenancy.{} ({}) values ({}) returning id").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, values)),
                sql.SQL(", ").join(map(sql.Placeholder, values))), values).fetchone()[0]

        for site in fleet.sites:
            fleet.site_ids[(site.organization, site.name)] = find_or_insert("sites", ("organization_id", "name"), {
                "organization_id": org_ids[site.organization], "name": site.name,
                "server_id": fleet.server_ids[(site.organization, site.server)],
                "max_memory_mb": site.max_memory_mb, "max_cpu_percent": site.max_cpu_percent,
                "max_disk_mb": site.max_disk_mb, "max_bandwidth_mb": site.max_bandwidth_mb,
                "max_requests_per_minute": site.max_requests_per_minute,
            })
        for a in fleet.applications:
            find_or_insert("applications", ("organization_id", "name"), {
                "organization_id": org_ids[a.organization], "name": a.name,
                "server_id": fleet.server_ids.get((a.organization, a.server))})
        for d in fleet.databases:
            find_or_insert("databases", ("organization_id", "name"), {
                "organization_id": org_ids[d.organization], "name": d.name, "engine": d.engine,
                "server_id": fleet.server_ids.get((d.organization, d.server))})
        for dep in fleet.deployments:
            find_or_insert("deployments", ("site_id", "deployed_at"), {
                "organization_id": org_ids[dep.organization],
                "site_id": fleet.site_ids[(dep.organization, dep.site)],
                "status": dep.status, "build_seconds": dep.build_seconds, "deployed_at": dep.deployed_at,
                "created_at": dep.deployed_at})
        for lic in fleet.licences:
            values = asdict(lic)
            values["organization_id"] = org_ids[values.pop("organization")]
            conn.execute(
                "insert into tenancy.licences (organization_id, max_servers, max_applications, max_databases, "
                "max_deployments_per_month, max_cpu_cores, max_memory_bytes, max_disk_bytes, "
                "billing_period_start, billing_period_end) values (%(organization_id)s, %(max_servers)s, "
                "%(max_applications)s, %(max_databases)s, %(max_deployments_per_month)s, %(max_cpu_cores)s, "
                "%(max_memory_bytes)s, %(max_disk_bytes)s, %(billing_period_start)s, %(billing_period_end)s) "
                "on conflict (organization_id) do update set max_servers = excluded.max_servers, "
                "max_applications = excluded.max_applications, max_databases = excluded.max_databases, "
                "max_deployments_per_month = excluded.max_deployments_per_month, "
                "max_cpu_cores = excluded.max_cpu_cores, max_memory_bytes = excluded.max_memory_bytes, "
                "max_disk_bytes = excluded.max_disk_bytes, billing_period_start = excluded.billing_period_start, "
                "billing_period_end = excluded.billing_period_end, updated_at = now()",
                values,
            )
    fleet.labels = [AnomalyLabel(**{**asdict(lab), "server_id": fleet.server_ids[(lab.organization, lab.server)]})
                    for lab in fleet.labels]


@dataclass
class WriteSummary:
    server_metrics: int = 0
    site_usage: int = 0
    duplicates: int = 0


def write_fleet(fleet: Fleet, url: str | None = None, *, site_usage: bool = True,
                on_rows: Callable[[int], None] | None = None, batch_rows: int = 40_000) -> WriteSummary:
    """Write tenancy and every series to the database through the COPY loader.

    Idempotent: a second call with the same fleet adds no rows."""
    summary = WriteSummary()
    with db.connect(url, autocommit=True) as conn:
        write_tenancy(conn, fleet)

        def progress(rows: int, inserted: int) -> None:
            if on_rows is not None:
                on_rows(rows)

        def load(table: str, id_column: str, entities: list, ids: dict, frame: Callable, columns: list[str]) -> int:
            if entities and "interval_seconds" in frame(entities[0]):   # a fleet sampled off the default interval
                columns = [*columns, "interval_seconds"]
            # by column, no tuple per row: each entity's frame is one part of a batch
            parts = ({id_column: np.full(len(df), ids[(e.organization, e.name)], dtype=np.int64),
                      **frame_columns(df, ["collected_at", *columns])}
                     for e in entities for df in (frame(e),))
            inserted, duplicates = load_columns(conn, table, [id_column, "collected_at", *columns], parts,
                                                batch_rows=batch_rows, on_batch=progress)
            summary.duplicates += duplicates
            return inserted

        summary.server_metrics = load("server_metrics", "server_id", fleet.servers, fleet.server_ids,
                                      fleet.server_metrics, SERVER_METRIC_COLUMNS)
        if site_usage and fleet.sites and fleet.site_interval_seconds:
            summary.site_usage = load("site_usage", "site_id", fleet.sites, fleet.site_ids,
                                      fleet.site_usage, SITE_USAGE_COLUMNS)
    return summary


def write_labels(fleet: Fleet, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"seed": fleet.seed, "start": fleet.start.isoformat(), "days": fleet.days,
                             "labels": [lab.to_json() for lab in fleet.labels]}, indent=2) + "\n")
    return p


def write_fleet_files(fleet: Fleet, directory: str | Path, fmt: str = "csv", *, site_usage: bool = True,
                      on_rows: Callable[[int], None] | None = None) -> list[Path]:
    """Series as files ``rmp ingest`` reads: servers are named by organization + server
    name, so the files load into any database that has the fleet's tenancy."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    jobs: list[tuple[str, list, Callable]] = [
        ("server_metrics", fleet.servers, lambda s: fleet.server_metrics(s).assign(server=s.name)),
    ]
    if site_usage and fleet.site_interval_seconds:
        jobs.append(("site_usage", fleet.sites, lambda s: fleet.site_usage(s).assign(site=s.name)))
    for table, entities, frame in jobs:
        path = out / f"{table}.{ 'ndjson' if fmt == 'ndjson' else fmt}"
        key = "server" if table == "server_metrics" else "site"
        writer = None
        with open(path, "w", encoding="utf-8", newline="") if fmt != "parquet" else _nullctx() as fh:
            for i, e in enumerate(entities):
                df = frame(e)
                df.insert(0, "organization", e.organization)
                df.insert(1, key, df.pop(key))
                if fmt == "csv":
                    df.to_csv(fh, index=False, header=(i == 0), date_format="%Y-%m-%dT%H:%M:%SZ")
                elif fmt == "ndjson":
                    df.to_json(fh, orient="records", lines=True, date_format="iso", date_unit="s")
                elif fmt == "parquet":
                    import pyarrow as pa
                    import pyarrow.parquet as pq
                    tbl = pa.Table.from_pandas(df, preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(path, tbl.schema)
                    writer.write_table(tbl)
                else:
                    raise ValueError(f"unknown format {fmt!r}")
                if on_rows is not None:
                    on_rows(len(df))
        if writer is not None:
            writer.close()
        written.append(path)
    return written


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
