"""`rmp`: the command line of the Resource Metrics Platform.

Subcommands live next to the code they drive and are imported only when
used, so `rmp db start` does not pay for pandas and statsmodels.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from rmp.errors import UserError

# name -> "module:attribute" of a click command. One line per command.
COMMANDS = {
    "db": "rmp_app.commands.db:db",
    "migrate": "rmp_app.commands.migrate:migrate",
    "doctor": "rmp_app.commands.doctor:doctor",
    "catalog": "rmp_app.commands.catalog:catalog",
    "dbt": "rmp_app.commands.dbt:dbt",
    "bench": "bench.cli:bench",
    "ingest": "ingest.cli:ingest",
    "generate": "ingest.cli:generate",
    "collect": "ingest.cli:collect",
    "demo": "rmp_app.commands.demo:demo",
    "forecast": "analytics.cli:forecast",
    "anomalies": "analytics.cli:anomalies",
    "report": "analytics.cli:report",
    "export": "analytics.cli:export",
    "tenant": "rmp_app.commands.tenant:tenant",
    "api": "rmp_app.commands.api:api",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="resource-metrics-platform", prog_name="rmp")
def cli(verbose: bool) -> None:
    """Resource Metrics Platform: TimescaleDB metrics, dbt marts, forecasts and anomaly reports.

    Uses DATABASE_URL when set, otherwise the embedded TimescaleDB (`rmp db start`).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_command(command: click.Command, argv: list[str] | None, prog_name: str) -> None:
    """Run a click command the way every entry point does: user errors become
    one line on stderr and an exit code, never a traceback."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"{prog_name}: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        import psycopg

        if isinstance(exc, psycopg.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            click.echo(f"{prog_name}: database error: {first}", err=True)
            sys.exit(1)
        raise


def main(argv: list[str] | None = None) -> None:
    run_command(cli, argv, "rmp")


if __name__ == "__main__":
    main()
