"""The parts of docs/schema.md that are rendered from the catalog (rmp/catalog.py).

Each part sits between ``<!-- catalog:NAME -->`` and ``<!-- /catalog:NAME -->``;
``rmp catalog docs`` rewrites them and a test fails when the file and the
catalog disagree, so the document never lists a column or tier the schema lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from rmp import catalog
from rmp.settings import ROOT

SCHEMA_DOC = ROOT / "docs" / "schema.md"


def _bounds(bounds: catalog.Bounds) -> str:
    lower, upper = bounds
    if lower is None and upper is None:
        return "any"
    if upper is None:
        return f"≥ {lower:g}"
    return f"{lower:g}–{upper:g}"


def _window(span: timedelta | None) -> str:
    return "any longer" if span is None else f"≤ {catalog.span_text(span)}"


def server_metrics_columns() -> str:
    rows = [f"| `{c.name}` | {c.sql_type} | {_bounds(c.bounds)} |" for c in catalog.SERVER_METRICS]
    interval = catalog.SAMPLE_INTERVALS["server_metrics"]
    rows.append(f"| `{interval.name}` | {interval.sql_type} | {_bounds(interval.bounds)}, not null,"
                f" default {interval.default} (the seconds the sample covers) |")
    return "\n".join(["| column | type | values |", "| --- | --- | --- |",
                      "| `server_id` | bigint | → tenancy.servers |", "| `collected_at` | timestamptz | |", *rows])


def aggregate_tiers() -> str:
    rows = [f"| `{a.qualified}` | {a.resolution or ''} | {a.source} | {a.bucket_width} | {a.retention or 'forever'}"
            f" | {a.refresh_start_offset} | {a.compress_after or 'never'} | {_window(a.serves_window_up_to) if a.resolution else ''} |"
            for a in catalog.AGGREGATES]
    return "\n".join(["| aggregate | resolution | source | bucket | retention | refresh window | compressed after"
                      " | dashboard window |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows])


PARTS: dict[str, Callable[[], str]] = {"server_metrics_columns": server_metrics_columns,
                                       "aggregate_tiers": aggregate_tiers}


def render(text: str) -> str:
    """``text`` with every catalog part replaced by its rendering from the catalog."""
    for name, part in PARTS.items():
        block = re.compile(rf"(<!-- catalog:{name} -->\n)(?:.*?\n)?(<!-- /catalog:{name} -->)", re.DOTALL)
        found = block.search(text)
        if found is None:
            raise ValueError(f"{SCHEMA_DOC}: no <!-- catalog:{name} --> ... <!-- /catalog:{name} --> block")
        text = text[:found.end(1)] + part() + "\n" + text[found.start(2):]
    return text
