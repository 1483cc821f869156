"""Run every benchmark module present and write bench/results/latest.{json,md}.

A benchmark is a module ``bench.<name>`` with ``run(...) -> dict``. The
runner passes only the keyword arguments ``run`` declares: ``url`` (a
migrated engine — a fresh private engine per benchmark and engine kind,
unless ``DATABASE_URL`` is set), ``console``, ``cleanup`` and the sizes given as
``--param <name>.<arg>=<value>``. With several engines (``--engine both``)
every benchmark runs on each in turn, the same work, and the report puts
their figures side by side: one column per engine. A module's optional ``QUICK`` dict holds
its smoke-test sizes (``--quick``). Modules not written yet are reported as
skipped, and so are the OPT_IN ones unless named with ``--only`` (or run at
``--quick`` size); a failing benchmark is reported and the others still run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.results import RESULTS_DIR, write_json
from rmp.errors import UserError

# Order of the run and of the report. One line per benchmark module.
BENCHMARKS: dict[str, str] = {
    "ingest": "bench.ingest",
    "copy_vs_insert": "bench.copy_vs_insert",
    "queries": "bench.queries",
    "marts": "bench.marts",
    "anomaly_eval": "bench.anomaly_eval",
    "forecast_eval": "bench.forecast_eval",
    "scale": "bench.scale",
    "compression_columns": "bench.compression_columns",
    "api": "bench.api",
}

# Run only when named with --only: their default size is a run of its own, not
# a part of the all-benchmarks run (scale: 10,000 servers x 24 h = 28.8 M rows
# per engine, over an hour of bulk load alone on the native engine on 2 cores;
# the embedded engine crashed near 11.5 M rows). The report lists them as
# skipped with the command that runs them.
OPT_IN: dict[str, str] = {
    "scale": "opt-in, a run of its own (10,000 servers x 24 h per engine): python -m bench --only scale",
}


class BenchParamError(UserError):
    """A --param or --only the benchmarks do not know."""


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    result: dict = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 1)}
        if self.error:
            out["error"] = self.error
        if self.traceback:
            out["traceback"] = self.traceback
        if self.result:
            out["result"] = self.result
        return out


def parse_value(text: str) -> Any:
    """``10`` -> 10, ``0.5`` -> 0.5, ``true`` -> True, anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``["queries.servers=20"]`` -> ``{"queries": {"servers": 20}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, arg = key.partition(".")
        if not sep or not dot or not name or not arg:
            raise BenchParamError(f"--param {item!r}: expected <benchmark>.<argument>=<value>, e.g. queries.servers=20")
        if name not in BENCHMARKS:
            raise BenchParamError(f"--param {item!r}: no benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        out.setdefault(name, {})[arg] = parse_value(value)
    return out


def selected(only: list[str] | tuple[str, ...] | None, quick: bool) -> list[str]:
    """The benchmarks a run executes: those named with --only, else every one
    but the OPT_IN ones (which --quick runs at their small size)."""
    if only:
        return list(only)
    return [n for n in BENCHMARKS if quick or n not in OPT_IN]


def _load(module_name: str):
    """The module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def _accepts(func, name: str) -> bool:
    params = inspect.signature(func).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _check_params(module, name: str, params: Mapping[str, Any]) -> None:
    run = getattr(module, "run", None)
    if run is None:
        raise BenchParamError(f"bench.{name} has no run() function")
    for arg in params:
        if not _accepts(run, arg):
            known = [p for p in inspect.signature(run).parameters if p not in ("url", "console", "cleanup", "out_dir")]
            raise BenchParamError(f"--param {name}.{arg}: bench.{name}.run() takes no {arg!r}; it takes {', '.join(known)}")


def run_all(
    only: list[str] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    *,
    quick: bool = False,
    out_dir: Path = RESULTS_DIR,
    console: Console | None = None,
    engines: list[str] | None = None,
) -> dict:
    """Run the selected benchmarks in order on each engine; write latest.json and latest.md; return the report."""
    from bench.engine import describe, engine_kinds

    console = console or Console(stderr=True)
    params = params or {}
    kinds = engines or engine_kinds(None)[0]
    names = list(only) if only else list(BENCHMARKS)
    opted_out = [n for n in names if n not in selected(only, quick)]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise BenchParamError(f"--only {', '.join(unknown)}: unknown benchmark; known: {', '.join(BENCHMARKS)}")

    modules = {}
    outcomes: dict[str, dict[str, Outcome]] = {}
    for name in opted_out:
        outcomes[name] = dict.fromkeys(kinds, Outcome(name, "skipped", error=OPT_IN[name]))
    for name in names:
        if name in opted_out:
            continue
        try:
            modules[name] = _load(BENCHMARKS[name])
        except Exception as exc:  # noqa: BLE001 - a broken module must not stop the others
            failed = Outcome(name, "failed", error=f"import failed: {_one_line(exc)}", traceback=traceback.format_exc())
            outcomes[name] = dict.fromkeys(kinds, failed)
            continue
        if modules[name] is None:
            outcomes[name] = dict.fromkeys(kinds, Outcome(name, "skipped", error=f"{BENCHMARKS[name]} is not present"))
            continue
        given = {**(getattr(modules[name], "QUICK", {}) if quick else {}), **params.get(name, {})}
        _check_params(modules[name], name, given)
        params[name] = given

    started = datetime.now(UTC)
    runnable = [n for n in names if modules.get(n) is not None]
    steps = [(n, k) for n in runnable for k in kinds]
    for i, (name, kind) in enumerate(steps, 1):
        console.rule(f"[bold]bench {i}/{len(steps)}: {name} on {kind}[/] {params.get(name) or ''}")
        outcome = _run_one(name, modules[name], params.get(name, {}), console, out_dir, kind, len(kinds) > 1)
        style = "green" if outcome.status == "ok" else "red"
        console.print(f"[{style}]{name} on {kind}: {outcome.status}[/] in {outcome.seconds:.1f} s"
                      + (f" — {outcome.error}" if outcome.error else ""))
        outcomes.setdefault(name, {})[kind] = outcome
    if len(kinds) > 1:  # <name>.json: every engine's result, keyed by engine
        for name, by_kind in outcomes.items():
            results = {k: o.result for k, o in by_kind.items() if o.status == "ok"}
            if results:
                write_json(out_dir, f"{name}.json", results)

    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "engines": {k: describe(k) for k in kinds},
        "quick": quick,
        "parameters": {n: params.get(n, {}) for n in names},
        "benchmarks": {n: {k: o.as_dict() for k, o in outcomes[n].items()} for n in names},
    }
    write_json(out_dir, "latest.json", report, markdown=markdown(report))
    return report


def _run_one(name: str, module, params: dict[str, Any], console: Console, out_dir: Path,
             kind: str, several: bool) -> Outcome:
    run = module.run
    t = time.perf_counter()
    try:
        if _accepts(run, "url"):
            from bench.engine import bench_engine

            with bench_engine(kind=kind) as eng:
                kwargs = _kwargs(run, params, url=eng.url, console=console, cleanup=not eng.private,
                                 out_dir=out_dir)
                result = run(**kwargs)
        else:
            result = run(**_kwargs(run, params, console=console, out_dir=out_dir))
    except Exception as exc:  # noqa: BLE001 - report it, run the next benchmark
        return Outcome(name, "failed", time.perf_counter() - t, error=_one_line(exc),
                       traceback=traceback.format_exc())
    write_json(out_dir, f"{name}-{kind}.json" if several else f"{name}.json", result)
    return Outcome(name, "ok", time.perf_counter() - t, result=result if isinstance(result, dict) else {"value": result})


def _kwargs(run, params: dict[str, Any], **offered: Any) -> dict[str, Any]:
    return {**{k: v for k, v in offered.items() if _accepts(run, k)}, **params}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def machine() -> dict:
    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------- markdown --


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    elif isinstance(value, bool) or value is None:
        text = {True: "yes", False: "no", None: "—"}[value]
    elif isinstance(value, int):
        text = f"{value:,}"
    elif isinstance(value, list):
        text = ", ".join(_cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return lines


def _flatten(d: dict, prefix: str = "") -> dict:
    """Every figure of a nested result under one dotted key; rows of a table
    (a list of dicts) are keyed by their first column, or their first two when
    the first repeats: ``dashboard[24h/compressed].aggregate_p95_ms``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            labels = [_row_label(row, 1) for row in v]
            if len(set(labels)) < len(labels):  # the first column repeats: key by the first two
                labels = [_row_label(row, 2) for row in v]
            for i, (row, (label, used)) in enumerate(zip(v, labels, strict=True)):
                rest = {c: x for c, x in row.items() if c not in used}
                out.update(_flatten(rest, f"{prefix}{k}[{label if used else i}]."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _row_label(row: dict, columns: int) -> tuple[str, tuple[str, ...]]:
    """The row's label from its first ``columns`` columns when they are text or
    integers (``24h``, ``24h/compressed``) and the columns used; else ("", ())."""
    keys = list(row)[:columns]
    if not keys or not all(isinstance(row[c], str | int) and not isinstance(row[c], bool) for c in keys):
        return "", ()
    return "/".join(str(row[c]) for c in keys), tuple(keys)


def markdown(report: dict) -> str:
    """The report as Markdown: a summary table, then each benchmark's figures
    with one column per engine, side by side."""
    m = report["machine"]
    engines: dict[str, str] = report["engines"]
    kinds = list(engines)
    lines = [
        "# Benchmark results",
        "",
        f"{report['started_at']} → {report['finished_at']}; {m['cpus']} CPUs, {m['memory_gb']} GB RAM, "
        f"Python {m['python']}" + ("; **quick sizes**" if report.get("quick") else ""),
        "",
        "Engines: " + "; ".join(f"**{k}**: {v}" for k, v in engines.items()),
        "",
    ]
    summary = []
    for name, by_kind in report["benchmarks"].items():
        row: dict[str, Any] = {"benchmark": name}
        for k in kinds:
            b = by_kind.get(k, {})
            row[f"{k} status"] = b.get("status", "—")
            row[f"{k} seconds"] = b.get("seconds")
        row["parameters"] = ", ".join(f"{a}={v}" for a, v in report["parameters"].get(name, {}).items())
        row["note"] = "; ".join(f"{k}: {b['error']}" for k, b in by_kind.items() if b.get("error"))
        summary.append(row)
    lines += _table(summary) + [""]
    for name, by_kind in report["benchmarks"].items():
        flat = {k: _flatten(b["result"]) for k, b in by_kind.items() if b.get("status") == "ok"}
        if not flat:
            continue
        metrics: list[str] = []
        for figures in flat.values():
            metrics += [key for key in figures if key not in metrics]
        lines += [f"## {name}", ""]
        lines += _table([{"metric": key, **{k: flat[k].get(key) if k in flat else None for k in kinds}}
                         for key in metrics]) + [""]
    return "\n".join(lines).rstrip() + "\n"
