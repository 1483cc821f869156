"""Where the compressed bytes of server_metrics' rows go, column by column, and what
other layouts save, on the generator's fleet.

The same generated rows are loaded into scratch hypertables shaped like the raw
hypertable (same indexes, 1-day chunks, segment-by ``server_id``, order-by
``collected_at desc``) in a scratch schema: ``as_is`` with the column types of
``metrics.server_metrics`` (the table before revision 0012; a view from it on),
one per variant (``double precision`` -> ``real``, small counts -> ``smallint``,
the derived columns left out, percents and loads as integer hundredths, byte
columns in a Linux collector's units), and ``collector_precision_lossless_compact``:
revision 0012's ``metrics.server_samples`` (units + remainder, derivation +
residual; lossless). Every chunk is compressed; reported per variant: bytes per row
before and after (``hypertable_size``), the reduction, and the compressed bytes per
row of each column (``pg_column_size`` over the compressed chunks). Writes
``bench/results/compression_columns.json`` (``--out``).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from bench.results import RESULTS_DIR, write_json
from rmp import db

QUICK = {"servers": 4, "days": 1}
SCHEMA = "bench_compression"
DERIVED = ("memory_available_bytes", "disk_available_bytes", "memory_percent", "disk_percent")
SMALL = ("cpu_cores", "containers_running", "containers_total")


# Integer encodings at the precision the data has: percents and loads in hundredths (the
# generator and collectors report two decimals), and byte columns in the unit a Linux collector
# really reads them in (/proc/meminfo: KiB; statvfs: 4 KiB blocks; /proc/diskstats: 512-byte
# sectors). TimescaleDB compresses integers by delta-of-delta + simple-8b, which packs by bit
# width: trailing zero bits of a multiple of 1024 are only saved when the unit is stored.
HUNDREDTHS = ("cpu_percent", "load_1m", "load_5m", "load_15m", "memory_percent", "disk_percent")
UNITS = {"memory_used_bytes": 1024, "memory_total_bytes": 1024, "disk_used_bytes": 4096, "disk_total_bytes": 4096,
         "disk_read_bytes": 512, "disk_write_bytes": 512}


def _hundredths(data):
    out = data.copy()
    for c in HUNDREDTHS:
        out[c] = (out[c] * 100).round().astype("Int64")
    return out


def _collector_units(data):
    out = _hundredths(data)
    for c, unit in UNITS.items():
        out[c] = (out[c] // unit).astype("Int64")
    return out


def _at_collector_precision(data):
    """The generated rows as a Linux collector would report them: memory in whole KiB, disk
    used in 4 KiB blocks, disk I/O in 512-byte sectors (all still stated in bytes)."""
    out = data.copy()
    for c, unit in UNITS.items():
        if c.endswith("_total_bytes"):
            continue
        out[c] = out[c] // unit * unit
    out["memory_available_bytes"] = out["memory_total_bytes"] - out["memory_used_bytes"]
    out["disk_available_bytes"] = out["disk_total_bytes"] - out["disk_used_bytes"]
    return out


def _derived_hundredths(used, total):
    return (used * 10000 + total // 2) // total


# A lossless compact layout (revision 0012's metrics.server_samples): every value of server_metrics'
# columns can be recomputed exactly from it
# (bytes = units * unit + remainder; a derived column = its derivation + a stored residual), and
# the parts that real collectors make constant (remainders, residuals) cost almost nothing.
LOSSLESS: dict[str, str] = {
    **{f"{c}_x100": "integer" for c in HUNDREDTHS if c not in ("memory_percent", "disk_percent")},
    "cpu_cores": "integer", "memory_total_bytes": "bigint",
    "memory_used_kib": "bigint", "memory_used_rem": "smallint",
    "memory_available_residual": "bigint", "memory_percent_residual": "integer",
    "disk_total_bytes": "bigint", "disk_used_blocks": "bigint", "disk_used_rem": "smallint",
    "disk_available_residual": "bigint", "disk_percent_residual": "integer",
    "disk_read_sectors": "bigint", "disk_read_rem": "smallint",
    "disk_write_sectors": "bigint", "disk_write_rem": "smallint",
    "network_rx_bytes": "bigint", "network_tx_bytes": "bigint",
    "containers_running": "integer", "containers_total": "integer",
}
_UNIT_NAMES = {"memory_used_bytes": "memory_used_kib", "disk_used_bytes": "disk_used_blocks",
               "disk_read_bytes": "disk_read_sectors", "disk_write_bytes": "disk_write_sectors"}


def _lossless_compact(data):
    out = data[["server_id", "collected_at", "cpu_cores", "memory_total_bytes", "disk_total_bytes",
                "network_rx_bytes", "network_tx_bytes", "containers_running", "containers_total",
                "interval_seconds"]].copy()
    for c in HUNDREDTHS:
        if c not in ("memory_percent", "disk_percent"):
            out[f"{c}_x100"] = (data[c] * 100).round().astype("int64")
    for c, name in _UNIT_NAMES.items():
        out[name] = data[c] // UNITS[c]
        out[name.rsplit("_", 1)[0] + "_rem"] = data[c] % UNITS[c]
    for kind in ("memory", "disk"):
        used, total = data[f"{kind}_used_bytes"], data[f"{kind}_total_bytes"]
        out[f"{kind}_available_residual"] = data[f"{kind}_available_bytes"] - (total - used)
        out[f"{kind}_percent_residual"] = (data[f"{kind}_percent"] * 100).round().astype("int64") \
            - _derived_hundredths(used, total)
    return out


def _lossless_decoded(compact):
    """Today's columns back from the compact layout: what a view over it would compute."""
    out = compact[["server_id", "collected_at", "cpu_cores", "memory_total_bytes", "disk_total_bytes",
                   "network_rx_bytes", "network_tx_bytes", "containers_running", "containers_total",
                   "interval_seconds"]].copy()
    for c in HUNDREDTHS:
        if c not in ("memory_percent", "disk_percent"):
            out[c] = compact[f"{c}_x100"] / 100
    for c, name in _UNIT_NAMES.items():
        out[c] = compact[name] * UNITS[c] + compact[name.rsplit("_", 1)[0] + "_rem"]
    for kind in ("memory", "disk"):
        used, total = out[f"{kind}_used_bytes"], out[f"{kind}_total_bytes"]
        out[f"{kind}_available_bytes"] = total - used + compact[f"{kind}_available_residual"]
        out[f"{kind}_percent"] = (_derived_hundredths(used, total) + compact[f"{kind}_percent_residual"]) / 100
    return out


def _variants(types: dict[str, str]) -> dict[str, tuple[dict[str, str], object]]:
    """name -> (column types, transform of the generated frame or None)."""
    real = {k: ("real" if v == "double precision" else v) for k, v in types.items()}
    small = {k: ("smallint" if k in SMALL else v) for k, v in real.items()}
    scaled = {k: ("integer" if k in HUNDREDTHS else ("smallint" if k in SMALL else v))
              for k, v in types.items() if k not in DERIVED}
    return {
        "as_is": (types, None),
        "real": (real, None),
        "real_smallint": (small, None),
        "real_smallint_no_derived": ({k: v for k, v in small.items() if k not in DERIVED}, None),
        "hundredths_no_derived": (scaled, _hundredths),
        "hundredths_collector_units_no_derived": (scaled, _collector_units),
        "collector_precision_as_is": (types, _at_collector_precision),
        "collector_precision_lossless_compact": (
            {**LOSSLESS, "interval_seconds": types["interval_seconds"]},
            lambda d: _lossless_compact(_at_collector_precision(d))),
    }


def _frame(servers: int, days: int):
    import pandas as pd

    from ingest.generator import generate_fleet

    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days + 1)
    fleet = generate_fleet(seed=11, organizations=1, servers=servers, days=days, start=start,
                           sub_organizations=0, sites_per_server=0, anomalies_per_server=0.5)
    frames = []
    for i, s in enumerate(fleet.servers, 1):
        df = fleet.server_metrics(s)
        df.insert(0, "server_id", i)
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    if "interval_seconds" not in data:    # the seconds each sample covers (revision 0010): all alike here
        data["interval_seconds"] = fleet.interval_seconds
    return data


def _measure(conn: psycopg.Connection, name: str, types: dict[str, str], data) -> dict:
    table = sql.Identifier(SCHEMA, name)
    conn.execute(sql.SQL("drop table if exists {}").format(table))
    conn.execute(sql.SQL("create table {} (server_id bigint not null, collected_at timestamptz not null, {})").format(
        table, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in types.items())))
    qualified = f"{SCHEMA}.{name}"
    conn.execute("select create_hypertable(%s::regclass, by_range('collected_at', interval '1 day'),"
                 " create_default_indexes => false)", [qualified])
    conn.execute(sql.SQL("create unique index on {} (server_id, collected_at desc)").format(table))
    conn.execute(sql.SQL("create index on {} (collected_at desc)").format(table))
    conn.execute(sql.SQL("alter table {} set (timescaledb.compress, timescaledb.compress_segmentby = 'server_id',"
                         " timescaledb.compress_orderby = 'collected_at desc')").format(table))
    cols = ["server_id", "collected_at", *types]
    buf = io.StringIO()
    data[cols].to_csv(buf, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    with conn.cursor().copy(sql.SQL("copy {} ({}) from stdin (format csv)").format(
            table, sql.SQL(", ").join(map(sql.Identifier, cols)))) as copy:
        copy.write(buf.getvalue())
    conn.execute(sql.SQL("analyze {}").format(table))
    n = len(data)
    before = conn.execute("select hypertable_size(%s::regclass)", [qualified]).fetchone()[0]
    conn.execute("select compress_chunk(c) from show_chunks(%s::regclass) c", [qualified])
    after = conn.execute("select hypertable_size(%s::regclass)", [qualified]).fetchone()[0]
    chunks = [r[0] for r in conn.execute(
        "select format('%%I.%%I', c.schema_name, c.table_name) from _timescaledb_catalog.chunk c"
        " join _timescaledb_catalog.chunk p on p.compressed_chunk_id = c.id"
        " join _timescaledb_catalog.hypertable h on h.id = p.hypertable_id"
        " where h.schema_name = %s and h.table_name = %s", [SCHEMA, name]).fetchall()]
    per_column = {}
    for c in cols:
        total = sum(conn.execute(sql.SQL("select coalesce(sum(pg_column_size({})), 0) from {}").format(
            sql.Identifier(c), sql.SQL(ch))).fetchone()[0] for ch in chunks)
        per_column[c] = round(total / n, 2)
    conn.execute(sql.SQL("drop table {}").format(table))
    return {"rows": n, "bytes_per_row_before": round(before / n, 1), "bytes_per_row_after": round(after / n, 1),
            "reduction": round(1 - after / before, 4), "compressed_bytes_per_row_by_column": per_column}


def run(url: str, *, servers: int = 40, days: int = 2, only: list[str] | None = None, console=None,
        out_dir: Path = RESULTS_DIR, out_name: str = "compression_columns.json") -> dict:
    say = console.print if console else print
    data = _frame(servers, days)
    result: dict = {"servers": servers, "days": days, "rows": len(data), "variants": {}}
    with db.connect(url, autocommit=True) as conn:
        types = dict(conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
            " where a.attrelid = 'metrics.server_metrics'::regclass and a.attnum > 0 and not a.attisdropped"
            " and a.attname not in ('server_id', 'collected_at') order by a.attnum").fetchall())
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
        try:
            for name, (variant, transform) in _variants(types).items():
                if only and name != "as_is" and name not in only:
                    continue
                r = _measure(conn, name, variant, data if transform is None else transform(data))
                # against the table before revision 0012 (as_is: server_metrics' own column types),
                # uncompressed: what a design saves overall
                r["reduction_vs_as_is_uncompressed"] = round(
                    1 - r["bytes_per_row_after"] / result["variants"]["as_is"]["bytes_per_row_before"], 4) \
                    if "as_is" in result["variants"] else r["reduction"]
                result["variants"][name] = r
                say(f"  {name:<38} {r['bytes_per_row_before']:>6} -> {r['bytes_per_row_after']:>5} bytes/row "
                    f"({100 * r['reduction']:.1f} % smaller; {100 * r['reduction_vs_as_is_uncompressed']:.1f} % "
                    "vs the table before revision 0012, uncompressed)")
        finally:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(SCHEMA)))
    write_json(out_dir, out_name, result)
    return result


if __name__ == "__main__":
    import argparse

    from bench.engine import bench_engine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=40, help="generated servers (default: %(default)s)")
    p.add_argument("--days", type=int, default=2, help="days of 30-second samples per server (default: %(default)s)")
    p.add_argument("--engine", choices=["native", "embedded"], help="a private engine of this kind")
    p.add_argument("--only", action="append", metavar="VARIANT",
                   help="measure only this design (repeatable; as_is is always measured)")
    p.add_argument("--out", default="compression_columns.json", help="results file under bench/results/")
    a = p.parse_args()
    with bench_engine(kind=a.engine) as eng:
        run(eng.url, servers=a.servers, days=a.days, only=a.only, out_name=a.out)
