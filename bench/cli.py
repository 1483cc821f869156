"""`rmp bench` / `python -m bench`: run the benchmarks and write bench/results/latest.{json,md}."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from bench.runner import BENCHMARKS, RESULTS_DIR, parse_params, run_all


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--only", "-o", multiple=True, metavar="NAME",
              help=f"Run only this benchmark (repeatable): {', '.join(BENCHMARKS)}.")
@click.option("--param", "-p", "params", multiple=True, metavar="BENCH.ARG=VALUE",
              help="A size or option passed to that benchmark's run(), e.g. -p queries.servers=20 "
                   "-p queries.refresh_servers=2000 (repeatable).")
@click.option("--quick", is_flag=True,
              help="Small sizes for a smoke run (each benchmark's QUICK values; --param still wins).")
@click.option("--engine", "engine", type=click.Choice(["embedded", "native", "both"]), default=None,
              help="Engine(s) to run on, each benchmark on each in turn, results side by side "
                   "(default: both where the native engine is installed, else embedded; DATABASE_URL's server when set).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Directory for latest.json, latest.md and <benchmark>.json.")
def bench(only: tuple[str, ...], params: tuple[str, ...], quick: bool, engine: str | None, out_dir: Path) -> None:
    """Run every benchmark present and print a Markdown table of the results,
    one column per engine.

    Each benchmark gets a fresh private engine (migrated) of each kind
    --engine names, or the server in DATABASE_URL (a database of its own
    when the login may create one; else benchmark data under the
    organization slug `bench-*`, deleted afterwards). `scale` (10,000
    servers x 24 h, a run of its own) runs only when named with --only, or
    at its --quick size.
    """
    from bench.engine import engine_kinds

    console = Console(stderr=True)
    kinds, note = engine_kinds(engine)
    if note:
        console.print(note)
    report = run_all(list(only), parse_params(params), quick=quick, out_dir=out_dir, console=console,
                     engines=kinds)
    click.echo((out_dir / "latest.md").read_text())
    console.print(f"results: {out_dir / 'latest.json'} and {out_dir / 'latest.md'}")
    if any(o["status"] == "failed" for b in report["benchmarks"].values() for o in b.values()):
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench`: the same command with the CLI's one-line errors."""
    from rmp_app.cli import run_command

    run_command(bench, argv, "python -m bench")
