"""Every `rmp` command explains itself: `--help` works, says what the command
does, and describes each option (no database needed)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from rmp_app.cli import cli


def _commands(group: click.Group, path: tuple[str, ...] = ("rmp",)):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def test_every_command_and_option_has_help_text():
    found = dict(_commands(cli))
    assert {("rmp", "ingest"), ("rmp", "demo"), ("rmp", "api", "serve"), ("rmp", "export")} <= set(found)
    missing = [(" ".join(path), p.name) for path, cmd in found.items() for p in cmd.params
               if isinstance(p, click.Option) and not p.help]
    undocumented = [" ".join(path) for path, cmd in found.items() if not (cmd.help or cmd.short_help)]
    assert missing == [] and undocumented == []


def test_help_runs_for_every_command():
    runner = CliRunner()
    for path, _ in _commands(cli):
        result = runner.invoke(cli, [*path[1:], "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: ")
