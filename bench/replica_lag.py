"""Replica lag under load: how far a streaming hot standby falls behind while
the primary ingests, and how long it takes to catch up.

``python -m bench.replica_lag`` starts a private native primary (fsync on) and a
hot standby of it (``pg_basebackup -R``, rmp.standby), generates a fleet of
``--servers`` servers over ``--writers`` days (one day per writer), and runs one
``rmp ingest`` process per day at once. Every ``--sample-every`` seconds during
the load it reads the primary's ``pg_stat_replication``: bytes of WAL not yet
replayed on the standby, and PostgreSQL's replay lag (how long a recent commit
took to become visible there). After the load: seconds until the standby has
replayed the primary's final WAL position, and the rows on both sides (equal).
Results: ``bench/results/replica-lag-native.json`` and ``.md``.
tests/test_drill_replica.py measures the same way during its drill's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from bench.engine import describe
from bench.results import RESULTS_DIR, write_json
from rmp.standby import replay_lag


class LagSampler:
    """``rmp.standby.replay_lag`` of the primary every ``every`` seconds, in a thread."""

    def __init__(self, primary_url: str, every: float = 0.1):
        self.url, self.every = primary_url, every
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        with psycopg.connect(self.url, autocommit=True, application_name="replica-lag-sampler") as conn:
            while not self._stop.is_set():
                lag = replay_lag(conn)
                if lag is not None:
                    self.samples.append({"t": round(time.monotonic() - start, 3), **lag})
                self._stop.wait(self.every)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def summary(samples: list[dict]) -> dict:
    """Percentiles of the bytes behind and of the replay lag over the samples."""
    behind = [s["bytes_behind"] for s in samples]
    replay = [s["replay_lag_s"] for s in samples if s["replay_lag_s"] is not None]

    def pct(values: list[float], q: float, digits: int) -> float | None:
        return round(float(np.percentile(values, q)), digits) if values else None

    return {
        "samples": len(samples),
        "states": sorted({s["state"] for s in samples}),
        "samples_behind": sum(1 for b in behind if b > 0),
        "kb_behind_p50": pct([b / 1024 for b in behind], 50, 1),
        "kb_behind_p95": pct([b / 1024 for b in behind], 95, 1),
        "kb_behind_max": round(max(behind) / 1024, 1) if behind else None,
        "replay_lag_ms_p50": pct([r * 1000 for r in replay], 50, 1),
        "replay_lag_ms_p95": pct([r * 1000 for r in replay], 95, 1),
        "replay_lag_ms_max": round(max(replay) * 1000, 1) if replay else None,
    }


def catch_up_seconds(primary_url: str, standby_url: str, timeout: float = 120) -> float:
    """Seconds until the standby has replayed the primary's WAL position as of now."""
    t = time.monotonic()
    with psycopg.connect(primary_url, autocommit=True) as p, psycopg.connect(standby_url, autocommit=True) as s:
        lsn = p.execute("select pg_current_wal_lsn()").fetchone()[0]
        while s.execute("select pg_last_wal_replay_lsn() < %s::pg_lsn", (lsn,)).fetchone()[0]:
            if time.monotonic() - t > timeout:
                raise RuntimeError(f"the standby did not replay {lsn} within {timeout:g} s")
            time.sleep(0.01)
    return round(time.monotonic() - t, 3)


def run(*, servers: int, writers: int, sample_every: float, workdir: Path, say=print) -> dict:
    from ingest.fleet_writers import write_fleet_files, write_tenancy
    from ingest.generator import generate_fleet
    from rmp.migrations import upgrade
    from rmp.standby import start_standby
    from rmp.testing import native_cluster

    since = (datetime.now(UTC) - timedelta(days=writers + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    with native_cluster(fsync=True) as primary:
        upgrade(primary.url)
        standby = start_standby(primary)
        try:
            files = []
            with psycopg.connect(primary.url, autocommit=True) as conn:
                for day in range(writers):       # the same servers, one day per writer
                    fleet = generate_fleet(16, 1, servers, 1, since + timedelta(days=day), sub_organizations=0,
                                           sites_per_server=0, anomalies_per_server=0)
                    write_tenancy(conn, fleet)
                    (path,) = write_fleet_files(fleet, workdir / f"day{day}", "csv", site_usage=False)
                    files.append(path)
            say(f"replica lag: {writers} x rmp ingest of {servers} servers x 1 day at once on {describe('native')}")
            env = {**os.environ, "DATABASE_URL": primary.url}
            load_before = os.getloadavg()[0]
            with LagSampler(primary.url, sample_every) as sampler:
                t = time.monotonic()
                procs = [subprocess.Popen([sys.executable, "-m", "rmp_app", "ingest", str(f), "-q"], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for f in files]
                outcomes = [p.communicate(timeout=3600) for p in procs]
                load_s = time.monotonic() - t
            load_after = os.getloadavg()[0]
            if any(p.returncode for p in procs):
                raise RuntimeError("; ".join(err.strip() for _, err in outcomes if err.strip()))
            caught_up = catch_up_seconds(primary.url, standby.url)
            with psycopg.connect(primary.url) as p, psycopg.connect(standby.url) as s:
                rows = [c.execute("select count(*) from metrics.server_metrics").fetchone()[0] for c in (p, s)]
        finally:
            standby.destroy()
    return {"engine_description": describe("native"), "servers": servers, "writers": writers,
            "sample_every_s": sample_every, "load_seconds": round(load_s, 1),
            "machine_load_average_1m": [round(load_before, 1), round(load_after, 1)], "cpus": os.cpu_count(),
            "rows_loaded": rows[0], "rows_per_s": round(rows[0] / load_s, 1),
            "during_load": summary(sampler.samples), "catch_up_after_load_s": caught_up,
            "rows_primary": rows[0], "rows_standby": rows[1], "equal": rows[0] == rows[1]}


def markdown(r: dict) -> str:
    d = r["during_load"]
    return "\n".join([
        f"# Replica lag under load: {r['engine_description']}, primary and hot standby on loopback",
        "",
        f"{r['writers']} `rmp ingest` processes at once, {r['servers']} servers x 1 day each: "
        f"{r['rows_loaded']:,} rows in {r['load_seconds']} s ({r['rows_per_s']:,} rows/s), on a {r['cpus']}-CPU "
        f"machine with a load average of {r['machine_load_average_1m'][0]} before and "
        f"{r['machine_load_average_1m'][1]} after (other work shared it).",
        "",
        f"- sampled every {r['sample_every_s']:g} s from the primary's pg_stat_replication: {d['samples']} samples "
        f"(state {', '.join(d['states'])}), {d['samples_behind']} with WAL not yet replayed",
        f"- WAL not yet replayed on the standby: p50 {d['kb_behind_p50']} kB, p95 {d['kb_behind_p95']} kB, "
        f"max {d['kb_behind_max']} kB",
        f"- replay lag (a commit on the primary to visible on the standby): p50 {d['replay_lag_ms_p50']} ms, "
        f"p95 {d['replay_lag_ms_p95']} ms, max {d['replay_lag_ms_max']} ms",
        f"- after the load the standby replayed the primary's last WAL position in {r['catch_up_after_load_s']} s",
        f"- rows on the primary {r['rows_primary']:,}, on the standby {r['rows_standby']:,}: "
        f"**{'equal' if r['equal'] else 'DIFFERENT'}**",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replica_lag", description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=20, help="servers per writer (each writer loads one day)")
    p.add_argument("--writers", type=int, default=4, help="concurrent `rmp ingest` processes")
    p.add_argument("--sample-every", type=float, default=0.1, help="seconds between lag samples")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for replica-lag-native.json/.md")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rmp-replica-lag-") as tmp:
        result = run(servers=a.servers, writers=a.writers, sample_every=a.sample_every, workdir=Path(tmp),
                     say=lambda s: print(s, file=sys.stderr, flush=True))
    write_json(a.out, "replica-lag-native.json", result, indent=1, markdown=markdown(result))
    print(markdown(result))
    if not result["equal"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
