"""What the platform knows about its own schema, in one place.

Core layer: imports nothing of the platform.
"""

from __future__ import annotations

# What a value can physically be: (lower, upper), None = unbounded on that side.
# Forecasts are clipped to it.
Bounds = tuple[float | None, float | None]
PERCENT: Bounds = (0.0, 100.0)
NON_NEGATIVE: Bounds = (0.0, None)
UNBOUNDED: Bounds = (None, None)

# The wide metric columns of metrics.server_metrics, in table order (after server_id, collected_at).
SERVER_METRIC_COLUMNS = [
    "cpu_percent", "load_1m", "load_5m", "load_15m", "cpu_cores",
    "memory_total_bytes", "memory_used_bytes", "memory_available_bytes", "memory_percent",
    "disk_total_bytes", "disk_used_bytes", "disk_available_bytes", "disk_percent",
    "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes",
    "containers_running", "containers_total",
]
# The metric columns of metrics.site_usage (after site_id, collected_at).
SITE_USAGE_COLUMNS = ["memory_used_mb", "cpu_percent", "disk_used_mb", "bandwidth_mb", "requests",
                      "active_requests", "response_time_ms", "is_up"]
