"""What the platform knows about its own schema, in one place.

Every consumer reads it from here: the migrations render SQL from it (the
continuous aggregates from one template, their policies, the published
``metrics.aggregate_tiers`` view that SQL, Grafana and dbt read), ``rmp
doctor`` audits a live database against it, analytics, exports, bench and
the collector take names, bounds and the window -> tier mapping from it.

Why a Python module and not only a table: alembic revisions must render the
same DDL whenever they run, before any catalog row could exist, and the CLI
needs the names without a database (``--help``, option choices). The
database gets a read-only copy (``metrics.aggregate_tiers``, re-published by
every migration) for the readers that only speak SQL.

Core layer: imports nothing of the platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# Seconds between two samples of one server when nothing says otherwise: the
# collector's and generator's default, and the default of the per-sample
# ``interval_seconds`` column (below). The dbt runner passes it to dbt as the
# var ``collection_interval_seconds`` (staleness of a server with no sample yet).
COLLECTION_INTERVAL_SECONDS = 30
# The same for sites (metrics.site_usage): the generator samples sites every 5 minutes.
SITE_COLLECTION_INTERVAL_SECONDS = 300

# What a value can physically be: (lower, upper), None = unbounded on that side.
# Forecasts are clipped to it; the table's CHECK constraints say the same.
Bounds = tuple[float | None, float | None]
PERCENT: Bounds = (0.0, 100.0)
NON_NEGATIVE: Bounds = (0.0, None)
UNBOUNDED: Bounds = (None, None)


# ---------------------------------------------------------------- wide metric columns

@dataclass(frozen=True)
class Stored:
    """How a metric column of ``metrics.server_metrics`` is kept in ``metrics.server_samples``.

    ``metrics.server_metrics`` is a view (revision 0012_compact_server_samples); its rows
    live in ``server_samples`` in a layout TimescaleDB compresses to under a tenth of its
    size (``python -m bench.compression_columns``): integers, which it packs by
    delta-of-delta and simple-8b, instead of floating point, which it can only XOR
    (Gorilla), and which keeps no gain from values with two decimals.

    * ``plain``: as it is.
    * ``hundredths``: ``{name}_x100``, the value x 100 rounded: two decimals are kept,
      what collectors report (more are rounded, like a ``numeric(p, 2)`` column).
    * ``units``: whole bytes as ``stored`` (the count of ``unit``-byte units a Linux
      collector reads: KiB, 4 KiB blocks, 512-byte sectors) plus ``{..}_rem``, the
      bytes left over: any whole number of bytes comes back, and a collector's leaves
      the remainder 0, which costs nothing compressed.
    * ``difference`` (``total - used``) and ``percent_of`` (``used / total`` in
      hundredths of a percent): the derivation plus ``{name}_residual``, what the
      reported value differs by (0 for the generator; MemAvailable for a collector).
    """

    kind: str = "plain"  # plain | hundredths | units | difference | percent_of
    unit: int = 0        # units: bytes per unit, a power of two
    stored: str = ""     # units: the stored column (memory_used_kib)
    used: str = ""       # difference, percent_of: the columns of server_metrics it derives from
    total: str = ""

    def __post_init__(self) -> None:
        if self.kind == "units" and (self.unit < 2 or self.unit & (self.unit - 1)):
            raise ValueError(f"unit {self.unit}: a power of two (encoded by shift and mask)")

    @property
    def shift(self) -> int:
        return self.unit.bit_length() - 1


PLAIN = Stored()
HUNDREDTHS = Stored("hundredths")


def _units(unit: int, stored: str) -> Stored:
    return Stored("units", unit=unit, stored=stored)


def _derived(kind: str, prefix: str) -> Stored:
    return Stored(kind, used=f"{prefix}_used_bytes", total=f"{prefix}_total_bytes")


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of a raw hypertable (after its key columns): server_metrics by default."""

    name: str
    sql_type: str  # double precision | bigint | integer | boolean
    bounds: Bounds  # what `rmp ingest` accepts and the CHECK constraint allows
    table: str = "server_metrics"
    stored: Stored = PLAIN  # server_metrics only: its layout in server_samples

    def storage_columns(self) -> list[tuple[str, str]]:
        """(name, type) of the columns of server_samples that hold this one."""
        kind = self.stored.kind
        if kind == "plain":
            return [(self.name, self.sql_type)]
        if kind == "hundredths":
            # percents fit an integer; a load is unbounded above but for its CHECK
            return [(f"{self.name}_x100", "integer" if self.bounds == PERCENT else "bigint")]
        if kind == "units":
            return [(self.stored.stored, "bigint"), (remainder_column(self.stored.stored), "smallint")]
        return [(f"{self.name}_residual", "bigint" if kind == "difference" else "integer")]

    @property
    def check_name(self) -> str:
        """The CHECK constraint's name: a bad row's error names the column."""
        suffix = "range" if self.bounds == PERCENT else "nonnegative"
        return f"{self.table}_{self.name}_{suffix}"


def remainder_column(stored: str) -> str:
    """memory_used_kib -> memory_used_rem"""
    return stored.rsplit("_", 1)[0] + "_rem"


def _percent(name: str, table: str = "server_metrics", stored: Stored = PLAIN) -> MetricColumn:
    return MetricColumn(name, "double precision", PERCENT, table, stored)


def _count(name: str, sql_type: str = "bigint", table: str = "server_metrics", stored: Stored = PLAIN,
           bounds: Bounds = NON_NEGATIVE) -> MetricColumn:
    return MetricColumn(name, sql_type, bounds, table, stored)


# A load average's upper bound: far above any machine's (thousands of runnable tasks x 100),
# low enough that its hundredths fit a bigint.
LOAD: Bounds = (0.0, 1e12)


# In table order. Disk and network byte columns are deltas since the previous sample.
# ``stored``: how server_samples keeps it (Stored above); network counters are whole bytes.
SERVER_METRICS: tuple[MetricColumn, ...] = (
    _percent("cpu_percent", stored=HUNDREDTHS),
    _count("load_1m", "double precision", stored=HUNDREDTHS, bounds=LOAD),
    _count("load_5m", "double precision", stored=HUNDREDTHS, bounds=LOAD),
    _count("load_15m", "double precision", stored=HUNDREDTHS, bounds=LOAD),
    _count("cpu_cores", "integer"),
    _count("memory_total_bytes"),
    _count("memory_used_bytes", stored=_units(1024, "memory_used_kib")),            # /proc/meminfo: kB
    _count("memory_available_bytes", stored=_derived("difference", "memory")),
    _percent("memory_percent", stored=_derived("percent_of", "memory")),
    _count("disk_total_bytes"),
    _count("disk_used_bytes", stored=_units(4096, "disk_used_blocks")),             # statvfs: 4 KiB blocks
    _count("disk_available_bytes", stored=_derived("difference", "disk")),
    _percent("disk_percent", stored=_derived("percent_of", "disk")),
    _count("disk_read_bytes", stored=_units(512, "disk_read_sectors")),             # /proc/diskstats: sectors
    _count("disk_write_bytes", stored=_units(512, "disk_write_sectors")),
    _count("network_rx_bytes"),
    _count("network_tx_bytes"),
    _count("containers_running", "integer"),
    _count("containers_total", "integer"),
)
SERVER_METRIC_COLUMNS = [c.name for c in SERVER_METRICS]


def metric_column(name: str) -> MetricColumn:
    for column in SERVER_METRICS:
        if column.name == name:
            return column
    raise KeyError(name)


# ---------------------------------------------------------------- the sampling interval

@dataclass(frozen=True)
class SampleInterval:
    """The ``interval_seconds`` column of a raw hypertable: the seconds the sample
    covers (since the previous sample of the same server or site). Byte and request
    counts of a sample are deltas over that interval, so rates are count / interval:
    true at any collection interval (revision 0010_interval_true_rates)."""

    table: str
    default: int  # what a row without the column gets (the interval that was assumed before 0010)
    bounds: Bounds = (0.05, 86_400.0)  # from rmp collect's shortest --interval to one day

    name = "interval_seconds"
    sql_type = "double precision"

    @property
    def check_name(self) -> str:
        return f"{self.table}_{self.name}_range"


SAMPLE_INTERVALS: dict[str, SampleInterval] = {
    "server_metrics": SampleInterval("server_metrics", COLLECTION_INTERVAL_SECONDS),
    "site_usage": SampleInterval("site_usage", SITE_COLLECTION_INTERVAL_SECONDS),
}
SAMPLE_INTERVAL_BOUNDS: Bounds = SAMPLE_INTERVALS["server_metrics"].bounds


# The metric columns of metrics.site_usage (after site_id, collected_at), in table order.
SITE_USAGE: tuple[MetricColumn, ...] = (
    _count("memory_used_mb", "double precision", "site_usage"),
    _percent("cpu_percent", "site_usage"),
    _count("disk_used_mb", "double precision", "site_usage"),
    _count("bandwidth_mb", "double precision", "site_usage"),
    _count("requests", "bigint", "site_usage"),
    _count("active_requests", "integer", "site_usage"),
    _count("response_time_ms", "double precision", "site_usage"),
    MetricColumn("is_up", "boolean", UNBOUNDED, "site_usage"),
)
SITE_USAGE_COLUMNS = [c.name for c in SITE_USAGE]


def value_bounds(table: str) -> dict[str, Bounds]:
    """The bounded metric columns of a raw hypertable: name -> (lower, upper); {} for other tables."""
    columns = {"server_metrics": SERVER_METRICS, "site_usage": SITE_USAGE}.get(table, ())
    bounds = {c.name: c.bounds for c in columns if c.bounds != UNBOUNDED}
    if table in SAMPLE_INTERVALS:
        bounds[SampleInterval.name] = SAMPLE_INTERVALS[table].bounds
    return bounds


# ---------------------------------------------------------------- hypertables and aggregates

SCHEMA = "metrics"
# Raw hypertables with compression (after a day) and retention at RAW_RETENTION.
# server_metrics' rows are in server_samples (a view over it from revision 0012 on:
# rmp.migrations.raw_hypertables() names what a database at an older revision has).
RAW_HYPERTABLES = ("server_samples", "metric_samples", "site_usage")
# Every hypertable the migrations create (scaling_events keeps its events).
HYPERTABLES = (*RAW_HYPERTABLES, "scaling_events")
RAW_RETENTION = "90 days"
RAW_COMPRESS_AFTER = "1 day"


@dataclass(frozen=True)
class Aggregate:
    """A continuous aggregate and its policies.

    Its refresh window (``refresh_start_offset`` back from now) must end
    inside the retention of its source (RAW_RETENTION: every level reads the
    raw hypertable), or a refresh after a retention run deletes history;
    ``metrics.configure_policies`` refuses such a catalog and ``rmp doctor``
    audits it on a live database.
    """

    name: str  # view in schema metrics
    source: str  # the raw hypertable it reads
    bucket_width: str
    retention: str | None  # None: kept forever
    refresh_start_offset: str
    refresh_end_offset: str
    refresh_every: str
    compress_after: str | None  # None: not compressed
    # The longest dashboard window this tier serves (~1,000-2,000 points per
    # panel); the next coarser tier serves longer ones, the last one any.
    serves_window_up_to: timedelta | None = None
    resolution: str | None = None  # the short name users pick: 1m, 5m, 1h, 1d

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def bucket(self) -> timedelta:
        """``bucket_width`` ('5 minutes') as a timedelta."""
        count, unit = self.bucket_width.split()
        return timedelta(**{_UNITS[unit.removesuffix("s")]: int(count)})


_UNITS = {"second": "seconds", "minute": "minutes", "hour": "hours", "day": "days", "week": "weeks"}


def _tier(name: str, resolution: str, bucket_width: str, retention: str | None, start_offset: str,
          compress_after: str, serves_window_up_to: timedelta | None) -> Aggregate:
    return Aggregate(
        name=name, source="server_metrics", bucket_width=bucket_width,
        retention=retention, refresh_start_offset=start_offset, refresh_end_offset=bucket_width,
        refresh_every=bucket_width, compress_after=compress_after,
        serves_window_up_to=serves_window_up_to, resolution=resolution,
    )


# The tiers of metrics.server_metrics, finest first. Each is rendered from the
# one definition in sql/templates/server-metrics-aggregate.sql.
# name, resolution, bucket, retention, refresh start_offset (end_offset and
# schedule: one bucket), compress_after, longest dashboard window served.
TIERS: tuple[Aggregate, ...] = (
    _tier("server_metrics_1m", "1m", "1 minute", "30 days", "2 hours", "1 day", timedelta(days=1)),
    _tier("server_metrics_5m", "5m", "5 minutes", "90 days", "6 hours", "1 day", timedelta(days=7)),
    _tier("server_metrics_1h", "1h", "1 hour", "1 year", "3 days", "7 days", timedelta(days=90)),
    _tier("server_metrics_1d", "1d", "1 day", None, "7 days", "30 days", None),
)
SITE_USAGE_DAILY = Aggregate(
    name="site_usage_daily", source="site_usage", bucket_width="1 day", retention=None,
    refresh_start_offset="7 days", refresh_end_offset="1 day", refresh_every="1 day", compress_after=None,
)
AGGREGATES: tuple[Aggregate, ...] = (*TIERS, SITE_USAGE_DAILY)
RESOLUTIONS = {t.resolution: t for t in TIERS}


def tier(resolution: str) -> Aggregate:
    """'1h' -> the 1-hour tier."""
    return RESOLUTIONS[resolution]


def tier_for_window(span: timedelta) -> Aggregate:
    """The tier a dashboard reads for a time range of ``span``: the finest one that serves it.

    The same rule as tenant.tier_for_window() in SQL (sql/idempotent/tier-read-path.sql),
    which reads the published copy of TIERS.
    """
    for t in TIERS:
        if t.serves_window_up_to is None or span <= t.serves_window_up_to:
            return t
    raise AssertionError("the last tier serves any window")


def span_text(span: timedelta) -> str:
    """A dashboard window for people: '7 d', '12 h'."""
    return f"{span.days} d" if span.days and not span.seconds else f"{span.total_seconds() / 3600:g} h"


def policies() -> dict:
    """What metrics.configure_policies() takes: the raw tier and every aggregate's policies."""
    return {
        "raw_retention": RAW_RETENTION,
        "raw_compress_after": RAW_COMPRESS_AFTER,
        "raw_hypertables": list(RAW_HYPERTABLES),
        "aggregates": [
            {"name": a.name, "retention": a.retention, "start_offset": a.refresh_start_offset,
             "end_offset": a.refresh_end_offset, "schedule": a.refresh_every, "compress_after": a.compress_after}
            for a in AGGREGATES
        ],
    }


# ---------------------------------------------------------------- relations users may name

@dataclass(frozen=True)
class Exportable:
    """A relation ``rmp export NAME`` may read: only these names ever reach SQL (as Identifiers)."""

    schema: str
    relation: str
    time_column: str
    entity_column: str | None  # filtered by --id
    order: tuple[str, ...]


# Aggregates are read through the tenant.* views, so an analyst (rmp_analyst, no
# access to schema metrics) exports its own organizations' rows and an admin everything.
EXPORTS: dict[str, Exportable] = {
    "forecasts": Exportable("analytics", "forecasts", "horizon_start", "entity_id",
                            ("entity_type", "entity_id", "metric", "horizon_start")),
    "anomalies": Exportable("analytics", "anomalies", "started_at", "server_id",
                            ("server_id", "metric", "detector", "started_at")),
    "report_runs": Exportable("analytics", "report_runs", "started_at", None, ("id",)),
    **{t.name: Exportable("tenant", t.name, "bucket", "server_id", ("server_id", "bucket")) for t in TIERS},
    SITE_USAGE_DAILY.name: Exportable("tenant", SITE_USAGE_DAILY.name, "bucket", "site_id", ("site_id", "bucket")),
    **{name: Exportable("marts", name, column, "organization_id", ("organization_id", column))
       for name, column in (("org_metrics_5m", "bucket_start_at"), ("org_metrics_hourly", "hour_start_at"),
                            ("org_metrics_daily", "day_start_at"), ("org_tree_metrics_5m", "bucket_start_at"),
                            ("org_tree_metrics_hourly", "hour_start_at"), ("org_tree_metrics_daily", "day_start_at"))},
}
