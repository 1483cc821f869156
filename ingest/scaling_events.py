"""Synthetic scaling events that follow each generated server's load.

An autoscaler watching hourly cpu means: an hour at or above
``SCALE_UP_PERCENT`` triggers a scale-up (double the cores), an hour at or
below ``SCALE_DOWN_PERCENT`` on a server with more than 2 cores a
scale-down (halve them), at most one event per server every
``COOLDOWN`` hours. Each event's outcome is drawn from the fleet's seed
(``OUTCOMES``); a failed one carries an error, a cancelled one ends early,
and only a succeeded one changes the cores and the cost (``COST_PER_CORE``
per month). Load before/after are the hourly cpu means of the triggering
hour and the hour after. Every organization also gets one
organization-level plan change (no server), as the optimizer recorded them.
Output: rows for metrics.scaling_events that `rmp ingest` loads (CSV or
NDJSON), servers named by organization + server name.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ingest.generator import Fleet

SCALE_UP_PERCENT = 55.0
SCALE_DOWN_PERCENT = 10.0
COOLDOWN = 12                       # hours between two events of one server
OUTCOMES = {"succeeded": 0.80, "failed": 0.12, "cancelled": 0.08}
COST_PER_CORE = 7.30                # currency units per core and month
COLUMNS = ["organization", "server", "event_type", "trigger_reason", "before_state", "after_state", "success",
           "error_details", "cost_impact", "executed_at", "completed_at", "outcome"]


def scaling_events(fleet: Fleet) -> pd.DataFrame:
    """One row per event, ordered by time; ``server`` is empty for organization-level events."""
    rng = np.random.default_rng([fleet.seed, 17])
    rows: list[dict] = []
    for server in fleet.servers:
        hourly = fleet.server_metrics(server).set_index("collected_at")["cpu_percent"].resample("1h").mean()
        cores, last = server.cpu_cores, -COOLDOWN
        for i, (hour, load) in enumerate(hourly.items()):
            if i - last < COOLDOWN or i + 1 >= len(hourly):
                continue
            if load >= SCALE_UP_PERCENT:
                kind, new_cores, reason = "scale_up", cores * 2, f"cpu {load:.1f}% >= {SCALE_UP_PERCENT:g}% for 1 h"
            elif load <= SCALE_DOWN_PERCENT and cores > 2:
                kind, new_cores, reason = "scale_down", cores // 2, f"cpu {load:.1f}% <= {SCALE_DOWN_PERCENT:g}% for 1 h"
            else:
                continue
            last = i
            outcome = str(rng.choice(list(OUTCOMES), p=list(OUTCOMES.values())))
            executed = hour + timedelta(hours=1, seconds=int(rng.integers(5, 120)))
            seconds = int(rng.integers(60, 600)) if outcome != "cancelled" else int(rng.integers(5, 60))
            after_cores = new_cores if outcome == "succeeded" else cores
            rows.append({
                "organization": server.organization, "server": server.name, "event_type": kind,
                "trigger_reason": reason,
                "before_state": json.dumps({"cpu_cores": cores, "cpu_percent": round(float(load), 2)}),
                "after_state": json.dumps({"cpu_cores": after_cores,
                                           "cpu_percent": round(float(hourly.iloc[i + 1]), 2)}),
                "success": outcome == "succeeded",
                "error_details": "provider capacity unavailable in zone" if outcome == "failed" else None,
                "cost_impact": round((after_cores - cores) * COST_PER_CORE, 2),
                "executed_at": executed, "completed_at": executed + timedelta(seconds=seconds),
                "outcome": outcome,
            })
            cores = after_cores
    for n, org in enumerate(fleet.organizations):
        executed = fleet.start + timedelta(days=min(1, fleet.days - 1) if fleet.days > 1 else 0, hours=9 + n)
        rows.append({
            "organization": org.slug, "server": None, "event_type": "manual_scale",
            "trigger_reason": "plan change requested by the organization",
            "before_state": json.dumps({"plan": "standard"}), "after_state": json.dumps({"plan": "pro"}),
            "success": True, "error_details": None, "cost_impact": 49.0,
            "executed_at": executed, "completed_at": executed + timedelta(seconds=30), "outcome": "succeeded",
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["executed_at", "organization"], kind="stable").reset_index(drop=True)


def write_scaling_events(fleet: Fleet, directory: str | Path, fmt: str = "csv") -> Path:
    """scaling_events.csv / .ndjson in ``directory``, in the format `rmp ingest` reads."""
    if fmt not in ("csv", "ndjson"):
        raise ValueError(f"scaling events are written as csv or ndjson, not {fmt!r}")
    path = Path(directory) / f"scaling_events.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = scaling_events(fleet)
    if fmt == "csv":
        frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso", date_unit="s")
    return path
