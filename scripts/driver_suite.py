"""Run a PostgreSQL driver's own test suite against both engines and compare.

The suite is psycopg2's (written by its authors, shipped in its source
distribution), for the psycopg2 version installed here (dbt-postgres brings
it). It runs once against a private native cluster (PostgreSQL + TimescaleDB,
the reference) and once against a private embedded server, each test with a
time limit; the result counts per engine, the tests that pass on native and
fail on embedded, and the engine restarts seen during each run are written to
--out (JSON) and printed.

    python scripts/driver_suite.py [--out bench/results/driver-suite.json]

A Markdown summary is written beside the JSON (same name, .md); --summary-only
rewrites it from an existing JSON without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rmp.embedded import EmbeddedServer  # noqa: E402
from rmp.native import NativeServer  # noqa: E402

DRIVER = "psycopg2"


def fetch_suite(cache: Path) -> tuple[str, Path]:
    """The installed driver's sdist (pip download), unpacked; returns (version, source dir)."""
    import psycopg2

    version = psycopg2.__version__.split()[0]
    src = cache / f"{DRIVER}-{version}"
    if not (src / "tests").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        f"{DRIVER}=={version}", "-d", str(cache)], check=True)
        with tarfile.open(cache / f"{DRIVER}-{version}.tar.gz") as tar:
            tar.extractall(cache, filter="data")
    return version, src


def engine_start_time(url: str):
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as c:
        return c.execute("select pg_postmaster_start_time()").fetchone()[0]


def run_suite(src: Path, url: str, junit: Path, timeout: int, log) -> dict:
    """pytest over the suite's tests/ with the DSN in the suite's own variables."""
    host_port, dbname = url.split("@", 1)[1].rsplit("/", 1)
    host, port = host_port.rsplit(":", 1)
    env = {**os.environ, "PSYCOPG2_TESTDB": dbname, "PSYCOPG2_TESTDB_HOST": host,
           "PSYCOPG2_TESTDB_PORT": port, "PSYCOPG2_TESTDB_USER": "postgres"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         f"--timeout={timeout}", f"--junitxml={junit}", "-o", "junit_family=xunit2"],
        cwd=src, env=env, capture_output=True, text=True)
    log.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    return {"seconds": round(time.monotonic() - started, 1), "pytest_exit": proc.returncode}


def outcomes(junit: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            result[name] = "failed"
        elif "error" in kinds:
            result[name] = "error"
        elif "skipped" in kinds:
            result[name] = "skipped"
        else:
            result[name] = "passed"
    return result


def count(res: dict[str, str]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for v in res.values():
        out[v] += 1
    return out


def write_summary(results: dict, md_path: Path) -> None:
    """The counts per engine and the tests that pass only on native, as Markdown."""
    lines = [f"# {results['driver']} {results['version']} test suite on both engines", "",
             f"Command: `{results.get('command', 'python scripts/driver_suite.py')}`, "
             f"{results['per_test_timeout_s']} s per test.", "",
             "| engine | passed | failed | errors | skipped | seconds | engine restarts |",
             "|---|---|---|---|---|---|---|"]
    for kind, r in results["engines"].items():
        lines.append(f"| {kind} | {r['passed']} | {r['failed']} | {r['error']} | {r['skipped']} | {r['seconds']} "
                     f"| {r['engine_restarts']} |")
    lines += ["", f"Pass on native, fail on embedded: **{results['pass_on_native_fail_on_embedded']}**", ""]
    lines += [f"- `{t}`" for t in results["regressions"]]
    lines += ["", "Fail on both (the driver's own version skew):", ""]
    lines += [f"- `{t}`" for t in results["fail_on_both"]]
    lines += ["", "Why each remaining one fails: embedded/README.md, section \"A driver's own test suite on both engines\".", ""]
    md_path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "driver-suite.json"),
                        help="JSON results file (default: bench/results/driver-suite.json)")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per test (default 30)")
    parser.add_argument("--idle-timeout", type=float, default=10,
                        help="embedded --idle-in-transaction-timeout for the run (default 10 s)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "rmp-driver-suite"),
                        help="where the driver's source distribution is kept")
    parser.add_argument("--summary-only", action="store_true",
                        help="only rewrite the Markdown summary from the existing --out JSON")
    args = parser.parse_args()
    if args.summary_only:
        write_summary(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".md"))
        return 0

    version, src = fetch_suite(Path(args.cache))
    print(f"{DRIVER} {version} test suite from its source distribution: {src}", flush=True)
    results: dict = {"driver": DRIVER, "version": version, "per_test_timeout_s": args.timeout,
                     "command": " ".join(["python", "scripts/driver_suite.py", *sys.argv[1:]]), "engines": {}}
    per_engine: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="rmp-driver-suite-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # the native cluster may run as the postgres OS user
        for kind in ("native", "embedded"):
            if kind == "native":
                server = NativeServer(work / "native", database="psycopg2_test")
            else:
                server = EmbeddedServer(work / "embedded", idle_in_transaction_timeout=args.idle_timeout)
            print(f"{kind}: starting", flush=True)
            server.start()
            try:
                url = server.url
                before = engine_start_time(url)
                junit = work / f"{kind}.xml"
                with open(work / f"{kind}.log", "w") as log:
                    run = run_suite(src, url, junit, args.timeout, log)
                after = engine_start_time(url)
                restarts = 0
                if kind == "embedded":
                    log_file = server.settings.log_file
                    restarts = log_file.read_text(errors="replace").count("engine failure")
                per_engine[kind] = outcomes(junit)
                results["engines"][kind] = {
                    **count(per_engine[kind]), **run,
                    "engine_restarts": restarts + (before != after),
                    "start_time_unchanged": before == after,
                }
                print(f"{kind}: {results['engines'][kind]}", flush=True)
            finally:
                server.stop()
    native, embedded = per_engine["native"], per_engine["embedded"]
    regressions = sorted(t for t, v in native.items() if v == "passed" and embedded.get(t) in ("failed", "error"))
    results["pass_on_native_fail_on_embedded"] = len(regressions)
    results["regressions"] = regressions
    results["fail_on_both"] = sorted(t for t, v in native.items()
                                     if v in ("failed", "error") and embedded.get(t) in ("failed", "error"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_summary(results, Path(args.out).with_suffix(".md"))
    print(f"pass on native, fail on embedded: {len(regressions)}; results in {args.out}")
    for t in regressions:
        print(f"  {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
