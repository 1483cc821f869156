"""The catalog (rmp/catalog.py) as Markdown tables, for `rmp catalog show`.

The reference lists of columns and tiers are printed from the catalog, not
copied into docs/: a copy is one more file to edit for every tier or column
(docs/schema.md describes the schema and points here).
"""

from __future__ import annotations

from datetime import timedelta

from rmp import catalog


def _bounds(bounds: catalog.Bounds) -> str:
    lower, upper = bounds
    if lower is None and upper is None:
        return "any"
    if upper is None:
        return f"≥ {lower:g}"
    return f"{lower:g}–{upper:g}"


def _window(span: timedelta | None) -> str:
    return "any longer" if span is None else f"≤ {catalog.span_text(span)}"


def _stored(c: catalog.MetricColumn) -> str:
    """How metrics.server_samples keeps the column (catalog.Stored)."""
    s = c.stored
    cols = ", ".join(f"`{name}`" for name, _ in c.storage_columns())
    return {
        "plain": "as is",
        "hundredths": f"{cols}: hundredths (two decimals)",
        "units": f"{cols}: {s.unit}-byte units + remainder",
        "difference": f"{cols}: `{s.total}` − `{s.used}` + residual",
        "percent_of": f"{cols}: `{s.used}` / `{s.total}` + residual",
    }[s.kind]


def server_metrics_columns() -> str:
    rows = [f"| `{c.name}` | {c.sql_type} | {_bounds(c.bounds)} | {_stored(c)} |" for c in catalog.SERVER_METRICS]
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    rows.append(f"| `{interval.name}` | {interval.sql_type} | {_bounds(interval.bounds)}, not null,"
                f" default {interval.default} (the seconds the sample covers) | as is |")
    return "\n".join(["| column | type | values | stored in metrics.server_samples |", "| --- | --- | --- | --- |",
                      "| `server_id` | bigint | → tenancy.servers | as is |",
                      "| `collected_at` | timestamptz | | as is |", *rows])


def aggregate_tiers() -> str:
    rows = [f"| `{a.qualified}` | {a.resolution or ''} | {a.source} | {a.bucket_width} | {a.retention or 'forever'}"
            f" | {a.refresh_start_offset} | {a.compress_after or 'never'} | {_window(a.serves_window_up_to) if a.resolution else ''} |"
            for a in catalog.AGGREGATES]
    return "\n".join(["| aggregate | resolution | source | bucket | retention | refresh window | compressed after"
                      " | dashboard window |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows])
