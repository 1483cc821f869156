"""What each endpoint reads: relations, columns and the window -> tier mapping.

Tiers and their default windows follow sql/queries/ (server_last_24h reads
the 5-minute aggregate, server_last_7d the hourly one, server_last_30d the
daily one): a span up to 24 h defaults to 5m, up to 7 days to 1h, longer to
1d. Every relation here is a tenant view or a mart, never schema metrics.
"""

from __future__ import annotations

from datetime import timedelta

# granularity -> (relation, time column, the aggregate whose refresh dates it or None)
SERVER_TIERS: dict[str, tuple[str, str, str | None]] = {
    "raw": ("tenant.server_metrics", "collected_at", None),
    "1m": ("tenant.server_metrics_1m", "bucket", "server_metrics_1m"),
    "5m": ("tenant.server_metrics_5m", "bucket", "server_metrics_5m"),
    "1h": ("tenant.server_metrics_1h", "bucket", "server_metrics_1h"),
    "1d": ("tenant.server_metrics_1d", "bucket", "server_metrics_1d"),
}

# (granularity, include_children) -> (mart, time column, aggregate)
ORGANIZATION_TIERS: dict[tuple[str, bool], tuple[str, str, str]] = {
    ("5m", False): ("marts.org_metrics_5m", "bucket_start_at", "server_metrics_5m"),
    ("1h", False): ("marts.org_metrics_hourly", "hour_start_at", "server_metrics_1h"),
    ("1d", False): ("marts.org_metrics_daily", "day_start_at", "server_metrics_1d"),
    ("5m", True): ("marts.org_tree_metrics_5m", "bucket_start_at", "server_metrics_5m"),
    ("1h", True): ("marts.org_tree_metrics_hourly", "hour_start_at", "server_metrics_1h"),
    ("1d", True): ("marts.org_tree_metrics_daily", "day_start_at", "server_metrics_1d"),
}

DEFAULT_WINDOWS: list[tuple[timedelta, str]] = [
    (timedelta(hours=24), "5m"),
    (timedelta(days=7), "1h"),
]
LONGEST_TIER = "1d"

RAW_COLUMNS = ["cpu_percent", "load_1m", "memory_used_bytes", "memory_percent", "disk_used_bytes",
               "disk_percent", "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes"]
AGGREGATE_COLUMNS = ["sample_count", "cpu_avg_percent", "cpu_max_percent", "cpu_p95_percent",
                     "memory_used_avg_bytes", "memory_avg_percent", "memory_max_percent",
                     "disk_used_avg_bytes", "disk_avg_percent", "disk_max_percent",
                     "network_rx_avg_bytes_per_sec", "network_tx_avg_bytes_per_sec"]
ORGANIZATION_COLUMNS = ["count_servers_reporting", "sample_count", "cpu_avg_percent", "cpu_max_percent",
                        "memory_used_avg_bytes_total", "memory_used_max_bytes_total",
                        "disk_used_avg_bytes_total", "disk_used_max_bytes_total",
                        "network_rx_avg_bytes_per_sec_total", "network_tx_avg_bytes_per_sec_total"]
ANOMALY_COLUMNS = ["metric", "detector", "started_at", "ended_at", "observed", "expected", "score",
                   "direction", "resolution"]
QUOTA_COLUMNS = ["quota_name", "unit", "limit_value", "used_value", "remaining_value", "remaining_clamped",
                 "percent_used", "is_unlimited", "is_at_limit", "is_exceeded", "is_full", "can_add",
                 "used_value_with_children", "is_exceeded_with_children", "is_full_with_children"]
CURRENT_COLUMNS = ["server_id", "organization_id", "server_name", "server_status", "last_metrics_at",
                   "cpu_percent", "memory_percent", "memory_used_bytes", "disk_percent", "disk_used_bytes",
                   "load_1m", "seconds_since_last_metrics", "is_stale"]


def default_granularity(span: timedelta) -> str:
    for window, tier in DEFAULT_WINDOWS:
        if span <= window:
            return tier
    return LONGEST_TIER
