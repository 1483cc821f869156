"""What each endpoint reads: relations, columns and the window -> tier mapping.

Tiers and the default tier of a span are the catalog's (rmp/catalog.py, the
mapping Grafana and sql/queries/server_window.sql use too): up to 24 h the
1-minute tier, up to 7 days 5 minutes, up to 90 days 1 hour, longer 1 day.
Organizations have marts at 5m, 1h and 1d: a span whose tier has none reads
the next coarser one. Every relation here is a tenant view or a mart, never
schema metrics.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from rmp import catalog

# granularity -> (relation, time column, the aggregate whose refresh dates it or None)
SERVER_TIERS: dict[str, tuple[str, str, str | None]] = {
    "raw": ("tenant.server_metrics", "collected_at", None),
    **{t.resolution: (f"tenant.{t.name}", "bucket", t.name) for t in catalog.TIERS},
}

# (granularity, include_children) -> (mart, time column, aggregate)
_ORGANIZATION_MARTS = {"5m": ("org_metrics_5m", "org_tree_metrics_5m", "bucket_start_at"),
                       "1h": ("org_metrics_hourly", "org_tree_metrics_hourly", "hour_start_at"),
                       "1d": ("org_metrics_daily", "org_tree_metrics_daily", "day_start_at")}
ORGANIZATION_TIERS: dict[tuple[str, bool], tuple[str, str, str]] = {
    (resolution, children): (f"marts.{marts[children]}", marts[2], catalog.tier(resolution).name)
    for resolution, marts in _ORGANIZATION_MARTS.items() for children in (False, True)
}

# The granularity choices of the endpoints (and of their OpenAPI schema): the catalog's tiers.
ServerGranularity = StrEnum("ServerGranularity", [(g, g) for g in SERVER_TIERS])
OrganizationGranularity = StrEnum("OrganizationGranularity", [(g, g) for g in _ORGANIZATION_MARTS])
DEFAULT_GRANULARITY_RULE = "default from the span: " + ", ".join(
    f"{t.resolution} up to {catalog.span_text(t.serves_window_up_to)}" if t.serves_window_up_to
    else f"{t.resolution} beyond" for t in catalog.TIERS)

# Raw disk/network figures are byte deltas over the sample's interval_seconds; the
# aggregates' *_bytes_per_sec are bytes over the seconds their samples cover.
RAW_COLUMNS = ["cpu_percent", "load_1m", "memory_used_bytes", "memory_percent", "disk_used_bytes",
               "disk_percent", "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes",
               "interval_seconds"]
AGGREGATE_COLUMNS = ["sample_count", "sampled_seconds", "cpu_avg_percent", "cpu_max_percent", "cpu_p95_percent",
                     "memory_used_avg_bytes", "memory_avg_percent", "memory_max_percent",
                     "disk_used_avg_bytes", "disk_avg_percent", "disk_max_percent",
                     "disk_read_avg_bytes_per_sec", "disk_write_avg_bytes_per_sec",
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


def default_granularity(span: timedelta, *, organization: bool = False) -> str:
    """The catalog's tier for a span; for an organization the first tier from there that has a mart."""
    tiers = [t.resolution for t in catalog.TIERS]
    first = tiers.index(catalog.tier_for_window(span).resolution)
    if not organization:
        return tiers[first]
    return next(r for r in tiers[first:] if r in _ORGANIZATION_MARTS)
