"""`rmp dbt <args>`: dbt on the project's dbt/ directory against the platform's engine."""

from __future__ import annotations

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dbt(args: tuple[str, ...]) -> None:
    """Run dbt on the project's dbt/ against the platform's database: `rmp dbt build`.

    The connection is DATABASE_URL, else the running embedded engine (`rmp db
    start`); --project-dir and --profiles-dir point at dbt/. Every argument
    goes to dbt unchanged (`rmp dbt build --help` shows dbt's help) and the
    exit code is dbt's.
    """
    if not args or args[0] in ("-h", "--help"):
        click.echo(click.get_current_context().get_help())
        return
    from transform.dbt_runner import run_dbt

    result = run_dbt(args)
    if result.exception is not None:
        click.echo(f"rmp: dbt could not run: {result.exception}", err=True)
    raise SystemExit(result.exit_code)
