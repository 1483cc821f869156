"""Host collector: samples this machine with psutil into metrics.server_metrics.

Disk and network figures are deltas of the kernel's counters since the
previous sample (the first sample primes the counters and is not stored,
as a real agent would), and every row says how long that was
(``interval_seconds``, measured on the monotonic clock between the two
counter reads), so the aggregates' bytes/s are true whatever ``--interval``
is and however late a sample was taken. Samples wait in a bounded buffer (deque with
maxlen) and are flushed through the COPY loader; while the database is
unreachable they accumulate, and only when more than ``buffer_size`` are
pending are the oldest dropped (counted in ``Collector.dropped``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg

from ingest.compact import EncodeError
from ingest.loader import load_rows
from rmp import db
from rmp.catalog import SAMPLE_INTERVAL_BOUNDS, SERVER_METRIC_COLUMNS
from rmp.errors import UserError

log = logging.getLogger(__name__)
COLUMNS = ["server_id", "collected_at", *SERVER_METRIC_COLUMNS, "interval_seconds"]


class CollectorError(UserError):
    """The collector cannot start (no such organization, bad options)."""


def register_host(conn: psycopg.Connection, organization: str, name: str | None = None) -> int:
    """The id of this host in tenancy.servers, inserting it (and the organization) if needed."""
    name = name or socket.gethostname()
    mem = psutil.virtual_memory().total
    disk = psutil.disk_usage(os.path.abspath(os.sep)).total
    with conn.transaction():
        org = conn.execute(
            "insert into tenancy.organizations (name, slug) values (%s, %s) "
            "on conflict (slug) do update set slug = excluded.slug returning id",
            (organization, organization),
        ).fetchone()[0]
        return conn.execute(
            "insert into tenancy.servers (organization_id, name, hostname, cpu_cores, memory_total_bytes, "
            "disk_total_bytes) values (%s, %s, %s, %s, %s, %s) on conflict (organization_id, name) "
            "do update set cpu_cores = excluded.cpu_cores, memory_total_bytes = excluded.memory_total_bytes, "
            "disk_total_bytes = excluded.disk_total_bytes returning id",
            (org, name, socket.getfqdn(), psutil.cpu_count() or 1, mem, disk),
        ).fetchone()[0]


def _containers() -> tuple[int, int] | tuple[None, None]:
    """Running and total containers from the Docker socket when there is one."""
    if not os.path.exists("/var/run/docker.sock"):
        return None, None
    try:
        import docker

        client = docker.from_env(timeout=2)
        all_ = client.containers.list(all=True)
        return sum(1 for c in all_ if c.status == "running"), len(all_)
    except Exception:  # noqa: BLE001 - containers are optional figures
        return None, None


class Sampler:
    """Reads psutil; ``sample()`` returns one server_metrics row (without server_id) by column
    name; a catalog column the sampler does not measure is written as null. ``interval_seconds``
    is the time since the previous counter read, None when outside the catalog's bounds (the
    collector then writes its --interval, and a gap longer than a day gives no byte deltas)."""

    def __init__(self, disk_path: str = os.sep, clock: Callable[[], float] = time.monotonic):
        self.disk_path = disk_path
        self.clock = clock
        self._prev_disk = psutil.disk_io_counters()
        self._prev_net = psutil.net_io_counters()
        self._prev_at = clock()
        psutil.cpu_percent(interval=None)   # primes the cpu counter; the next call measures since now

    @staticmethod
    def _delta(now: int | None, before: int | None) -> int | None:
        if now is None or before is None:
            return None
        return max(0, now - before)      # counters reset on reboot / wrap: never negative

    def sample(self) -> dict[str, Any]:
        at = datetime.now(UTC)
        cpu = psutil.cpu_percent(interval=None)
        load1, load5, load15 = psutil.getloadavg()
        vm = psutil.virtual_memory()
        du = psutil.disk_usage(self.disk_path)
        dio, nio = psutil.disk_io_counters(), psutil.net_io_counters()
        now = self.clock()
        pd, pn, elapsed = self._prev_disk, self._prev_net, now - self._prev_at
        self._prev_disk, self._prev_net, self._prev_at = dio, nio, now
        lo, hi = SAMPLE_INTERVAL_BOUNDS
        interval = elapsed if lo <= elapsed <= hi else None
        if elapsed > hi:
            pd = pn = None   # counters read more than a day apart: no rate worth storing
        running, total = _containers()
        used = vm.total - vm.available
        # two decimals, as /proc/loadavg prints loads and as server_samples keeps percents and
        # loads: what is stored is what was sampled
        return {
            "collected_at": at, "cpu_percent": round(min(max(cpu, 0.0), 100.0), 2),
            "load_1m": round(load1, 2), "load_5m": round(load5, 2), "load_15m": round(load15, 2),
            "cpu_cores": psutil.cpu_count() or 1,
            "memory_total_bytes": vm.total, "memory_used_bytes": used, "memory_available_bytes": vm.available,
            "memory_percent": round(used / vm.total * 100, 2),
            "disk_total_bytes": du.total, "disk_used_bytes": du.used, "disk_available_bytes": du.free,
            "disk_percent": round(du.percent, 2),
            "disk_read_bytes": self._delta(dio and dio.read_bytes, pd and pd.read_bytes),
            "disk_write_bytes": self._delta(dio and dio.write_bytes, pd and pd.write_bytes),
            "network_rx_bytes": self._delta(nio and nio.bytes_recv, pn and pn.bytes_recv),
            "network_tx_bytes": self._delta(nio and nio.bytes_sent, pn and pn.bytes_sent),
            "containers_running": running, "containers_total": total,
            "interval_seconds": interval,
        }


@dataclass
class CollectorStats:
    sampled: int = 0
    written: int = 0
    dropped: int = 0
    failed_flushes: int = 0


class Collector:
    def __init__(self, url: str | None, server_id: int, *, interval: float = 30.0, buffer_size: int = 2880,
                 sampler: Sampler | None = None):
        self.url, self.server_id, self.interval = url, server_id, interval
        self.buffer: deque[tuple] = deque(maxlen=buffer_size)
        self.sampler = sampler or Sampler()
        self.stats = CollectorStats()
        self.stop_event = threading.Event()

    def collect_once(self) -> None:
        if len(self.buffer) == self.buffer.maxlen:
            self.stats.dropped += 1          # deque drops the oldest on append
        sample = self.sampler.sample()
        sample["interval_seconds"] = sample.get("interval_seconds") or self.interval
        self.buffer.append((self.server_id, *(sample.get(c) for c in COLUMNS[1:])))
        self.stats.sampled += 1

    def flush(self) -> bool:
        """Write the buffer; on a database error keep it for the next try."""
        if not self.buffer:
            return True
        rows = list(self.buffer)
        try:
            with db.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                load_rows(conn, "server_metrics", COLUMNS, rows)
        except (psycopg.Error, UserError, EncodeError) as exc:
            self.stats.failed_flushes += 1
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("database unavailable, %d sample(s) kept in the buffer: %s", len(self.buffer), first)
            return False
        for _ in rows:                       # only what was written: samples taken meanwhile stay
            self.buffer.popleft()
        self.stats.written += len(rows)
        return True

    def run(self, count: int | None = None, on_sample: Callable[[CollectorStats], None] | None = None) -> CollectorStats:
        """Sample every ``interval`` seconds until ``count`` samples or ``stop()``/Ctrl-C;
        the buffer is flushed after each sample and once more on the way out."""
        next_at = time.monotonic() + self.interval   # the first interval fills the delta counters
        try:
            while not self.stop_event.is_set() and (count is None or self.stats.sampled < count):
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))
                if self.stop_event.is_set():
                    break
                next_at += self.interval
                self.collect_once()
                self.flush()
                if on_sample is not None:
                    on_sample(self.stats)
        except KeyboardInterrupt:
            log.info("interrupted; flushing %d buffered sample(s)", len(self.buffer))
        finally:
            self.flush()
        return self.stats

    def stop(self) -> None:
        self.stop_event.set()
