"""Run dbt on the project under ``dbt/`` against the platform's engine.

The connection comes from ``rmp.db`` (``DATABASE_URL`` or the embedded
server) and reaches ``dbt/profiles.yml`` as the ``RMP_DBT_*`` environment
variables it reads, so nobody exports them by hand. The target is chosen by asking
the server what it is (``rmp.db.is_embedded``): the embedded engine gets the
``embedded`` target, one thread (one shared backend session); every other
server the ``server`` target, several threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rmp import db
from rmp.errors import EngineError, UserError
from rmp.settings import DBT_DIR, get_settings

# Exit codes of the dbt CLI: 0 success, 1 a model/test failed, 2 dbt could not run.
EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

# Flags rmp sets unless the caller gives them.
_PATH_FLAGS = {"--project-dir": DBT_DIR, "--profiles-dir": DBT_DIR}

# Sub-commands that accept --project-dir/--profiles-dir (not `init`, `--version`...).
_PROJECT_COMMANDS = {
    "build", "clean", "clone", "compile", "debug", "deps", "docs", "list", "ls",
    "parse", "retry", "run", "run-operation", "seed", "show", "snapshot", "source", "test",
}


class DbtUrlError(UserError):
    """The database URL cannot be turned into a dbt profile."""


@dataclass
class DbtResult:
    """Outcome of one dbt invocation."""

    args: list[str]
    exit_code: int
    # dbt's own result object: a RunExecutionResult for build/run/test, a
    # Manifest for parse, a CatalogArtifact for docs generate, ...
    result: Any
    exception: BaseException | None

    @property
    def success(self) -> bool:
        return self.exit_code == EXIT_OK

    def statuses(self) -> dict[str, str]:
        """unique_id -> status ('success', 'pass', 'fail', 'error', ...) of every node run."""
        return {r.node.unique_id: str(r.status) for r in getattr(self.result, "results", None) or []}

    def failures(self) -> dict[str, str]:
        """unique_id -> dbt's message, for every node that did not succeed or pass."""
        return {
            r.node.unique_id: str(r.message)
            for r in getattr(self.result, "results", None) or []
            if str(r.status) not in ("success", "pass")
        }


def target_for(url: str) -> str:
    """``embedded`` when the server behind the URL is the embedded engine, else
    ``server``. A server that cannot be reached gets ``server``: dbt then
    reports the connection failure itself."""
    try:
        return "embedded" if db.is_embedded(url) else "server"
    except EngineError:
        return "server"


def profile_env(url: str, *, target: str | None = None) -> dict[str, str]:
    """The RMP_DBT_* variables dbt/profiles.yml reads, for this URL
    (``target`` None: ask the server which engine it is)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DbtUrlError(f"cannot parse database URL {db.redact(url)}: {exc}") from exc
    if not params.get("host") or "/" in str(params.get("host")):
        raise DbtUrlError(f"database URL {db.redact(url)} must name a TCP host for dbt")
    env = {
        "RMP_DBT_TARGET": target or target_for(url),
        "RMP_DBT_HOST": str(params["host"]),
        "RMP_DBT_PORT": str(params.get("port") or 5432),
        "RMP_DBT_USER": str(params.get("user") or "postgres"),
        "RMP_DBT_PASSWORD": str(params.get("password") or ""),
        "RMP_DBT_DBNAME": str(params.get("dbname") or "postgres"),
    }
    if params.get("sslmode"):
        env["RMP_DBT_SSLMODE"] = str(params["sslmode"])
    return env


def dbt_args(args: Sequence[str]) -> list[str]:
    """The caller's args plus --project-dir/--profiles-dir when the sub-command takes them."""
    out = list(args)
    command = next((a for a in out if not a.startswith("-")), None)
    if command not in _PROJECT_COMMANDS:
        return out
    for flag, value in _PATH_FLAGS.items():
        if not any(a == flag or a.startswith(flag + "=") for a in out):
            out += [flag, str(value)]
    return out


def _writable_paths(given: Mapping[str, str]) -> dict[str, str]:
    """dbt writes its logs and target/ (manifest, partial parse, docs) into the
    project directory; when this user cannot write there (an installed tree, a
    checkout owned by someone else) they go under RMP_HOME/dbt instead.
    DBT_LOG_PATH / DBT_TARGET_PATH set by the caller always win."""
    if os.access(DBT_DIR, os.W_OK):
        return {}
    home = get_settings().home / "dbt"
    return {var: str(home / sub) for var, sub in (("DBT_LOG_PATH", "logs"), ("DBT_TARGET_PATH", "target"))
            if var not in given and var not in os.environ}


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    # dbt reads env_var() from os.environ of this process.
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_dbt(
    args: Sequence[str],
    url: str | None = None,
    *,
    target: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    work_dir: Path | None = None,
) -> DbtResult:
    """Run dbt in this process with the project's settings; never raises for a failed model.

    work_dir: where dbt writes its target/ and logs/ (default: dbt/), so that
    concurrent runs (test workers, a benchmark beside a build) do not share them.
    """
    from dbt.cli.main import dbtRunner

    env = {
        **profile_env(url or db.database_url(), target=target),
        **_writable_paths(extra_env or {}),
        **({"DBT_TARGET_PATH": str(work_dir / "target"), "DBT_LOG_PATH": str(work_dir / "logs")} if work_dir else {}),
        **(extra_env or {}),
    }
    full = dbt_args(args)
    with _environ(env):
        res = dbtRunner().invoke(full)
    if res.success:
        code = EXIT_OK
    elif res.exception is not None:
        code = EXIT_ERROR
    else:
        code = EXIT_FAILED
    return DbtResult(args=full, exit_code=code, result=res.result, exception=res.exception)
