"""Reproducible synthetic fleet: tenancy, quotas and 30-second server metrics.

``generate_fleet(seed, ...)`` returns a ``Fleet`` that describes organizations
(with sub-organizations), users, servers, sites, applications, databases,
deployments and licences; metric series are computed on demand per server
(``fleet.server_metrics(server)``), each from its own seeded stream, so any
one series is cheap, independent of the others and identical on every run.

Series shapes: a daily cycle (quiet at 03:00 UTC, busy at 15:00), a weekly
one (weekends quieter), an AR(1) drift that wanders like the TSBS "devops"
cpu fields, Gaussian noise, disks that fill up (one server per fleet crosses
90 %), and injected anomalies (cpu spikes, memory level shifts) listed in
``fleet.labels`` with server, metric, start, end and kind.

The records are in ``ingest.fleet_model``; writing them (to the database
through the COPY loader, or to files ``rmp ingest`` reads) is ``ingest.fleet_writers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from ingest.fleet_model import (
    AnomalyLabel,
    Application,
    Database,
    Deployment,
    Licence,
    Organization,
    Server,
    Site,
    User,
)
from rmp import catalog
from rmp.catalog import COLLECTION_INTERVAL_SECONDS, SITE_COLLECTION_INTERVAL_SECONDS

GIB = 1024**3
GB = 1000**3
# The units a Linux collector counts in (rmp.catalog SERVER_METRICS' ``units`` layouts).
KIB = catalog.metric_column("memory_used_bytes").stored.unit          # /proc/meminfo: kB
BLOCK = catalog.metric_column("disk_used_bytes").stored.unit          # statvfs: 4 KiB blocks
SECTOR = catalog.metric_column("disk_read_bytes").stored.unit         # /proc/diskstats: sectors

_ORG_NAMES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
              "tyrell", "cyberdyne", "soylent", "aperture", "oscorp", "vandelay", "dunder", "pied"]
_SUB_NAMES = ["eu", "us", "labs", "staging"]
_ROLES = ["web", "db", "cache", "worker"]


@dataclass
class Fleet:
    seed: int
    start: datetime
    days: int
    interval_seconds: int
    site_interval_seconds: int
    organizations: list[Organization]
    users: list[User]
    servers: list[Server]
    sites: list[Site]
    applications: list[Application]
    databases: list[Database]
    deployments: list[Deployment]
    licences: list[Licence]
    labels: list[AnomalyLabel]
    server_ids: dict[tuple[str, str], int] = field(default_factory=dict)  # after write_fleet
    site_ids: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def samples_per_server(self) -> int:
        return self.days * 86400 // self.interval_seconds

    @property
    def server_metric_rows(self) -> int:
        return self.samples_per_server * len(self.servers)

    def timestamps(self, interval_seconds: int | None = None) -> pd.DatetimeIndex:
        step = interval_seconds or self.interval_seconds
        return pd.date_range(self.start, self.end, freq=f"{step}s", inclusive="left")

    def server(self, name: str, organization: str | None = None) -> Server:
        for s in self.servers:
            if s.name == name and (organization is None or s.organization == organization):
                return s
        raise KeyError(name)

    def server_metrics(self, server: Server) -> pd.DataFrame:
        """The server's series: one row per interval, columns of metrics.server_metrics
        (without server_id) plus ``collected_at`` (UTC)."""
        return _server_series(self, server)

    def site_usage(self, site: Site) -> pd.DataFrame:
        return _site_series(self, site)


# ---------------------------------------------------------------- fleet layout

def generate_fleet(seed: int = 42, organizations: int = 3, servers: int = 10, days: int = 7,
                   start: datetime | None = None, *, interval_seconds: int = COLLECTION_INTERVAL_SECONDS,
                   sub_organizations: int = 1, sites_per_server: int = 2,
                   anomalies_per_server: float = 0.5,
                   site_interval_seconds: int = SITE_COLLECTION_INTERVAL_SECONDS) -> Fleet:
    """A reproducible fleet: the same arguments always give the same fleet and series.

    ``start`` defaults to midnight UTC ``days`` days before today, so the data is
    recent (inside retention); pass it explicitly for bit-identical reruns on
    other days. ``sub_organizations`` is added under each of the first half of
    the organizations (at least the first one)."""
    if organizations < 1 or servers < 1 or days < 1:
        raise ValueError("organizations, servers and days must be >= 1")
    if 86400 % interval_seconds:
        raise ValueError("interval_seconds must divide a day")
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
    elif start.tzinfo is None:
        raise ValueError("start must carry a time zone")
    start = start.astimezone(UTC)
    rng = np.random.default_rng([seed, 0])

    orgs: list[Organization] = []
    for i in range(organizations):
        base = _ORG_NAMES[i % len(_ORG_NAMES)]
        slug = base if i < len(_ORG_NAMES) else f"{base}-{i // len(_ORG_NAMES) + 1}"
        orgs.append(Organization(slug, slug.replace("-", " ").title() + " Hosting"))
    with_subs = max(1, organizations // 2) if sub_organizations else 0
    for parent in list(orgs[:with_subs]):
        for k in range(sub_organizations):
            sub = _SUB_NAMES[k % len(_SUB_NAMES)] + ("" if k < len(_SUB_NAMES) else str(k))
            orgs.append(Organization(f"{parent.slug}-{sub}", f"{parent.name} {sub.upper()}", parent.slug))

    users = []
    for o in orgs:
        for role in ("owner", "admin", "member"):
            users.append(User(f"{role}@{o.slug}.example.com", f"{o.name} {role.title()}", o.slug, role))

    fill_index = int(rng.integers(servers))   # the one disk that crosses 90 %
    server_list: list[Server] = []
    per_org_count: dict[str, int] = {}
    for i in range(servers):
        org = orgs[i % len(orgs)]
        n = per_org_count[org.slug] = per_org_count.get(org.slug, 0) + 1
        role = _ROLES[(n - 1) % len(_ROLES)]
        name = f"{role}-{n:02d}"
        cores = int(rng.choice([2, 4, 8, 16, 32]))
        mem = int(rng.choice([4, 8, 16, 32, 64])) * GIB
        disk = int(rng.choice([100, 250, 500, 1000])) * GB
        if i == fill_index:
            d0, d1 = float(rng.uniform(62, 70)), float(rng.uniform(92, 96))
        else:
            d0 = float(rng.uniform(15, 60))
            d1 = d0 + float(rng.uniform(0, 0.4)) * days
        server_list.append(Server(
            index=i, organization=org.slug, name=name, hostname=f"{name}.{org.slug}.example.net",
            role=role, cpu_cores=cores, memory_total_bytes=mem, disk_total_bytes=disk,
            cpu_base=float(rng.uniform(5, 30)), cpu_daily_amplitude=float(rng.uniform(10, 40)),
            memory_base=float(rng.uniform(30, 60)), disk_start_percent=d0, disk_end_percent=d1,
            containers_total=int(rng.integers(0, 25)),
        ))

    sites: list[Site] = []
    for s in server_list:
        for k in range(sites_per_server):
            sites.append(Site(
                index=len(sites), organization=s.organization, server=s.name,
                name=f"{s.name}-site-{k + 1}.{s.organization}.example.com",
                max_memory_mb=int(rng.choice([512, 1024, 2048])), max_cpu_percent=float(rng.choice([25, 50, 100])),
                max_disk_mb=int(rng.choice([5120, 10240, 51200])), max_bandwidth_mb=int(rng.choice([10240, 102400])),
                max_requests_per_minute=int(rng.choice([600, 3000, 12000])),
            ))

    applications = [Application(s.organization, s.name, f"app-{s.name}") for s in server_list if s.role != "db"]
    databases = [Database(s.organization, s.name, f"db-{s.name}", "postgresql" if s.index % 2 else "mysql")
                 for s in server_list if s.role in ("db", "cache")]

    deployments: list[Deployment] = []
    for site in sites:
        for _ in range(int(rng.integers(1, 6))):
            at = start + timedelta(seconds=float(rng.uniform(0, days * 86400)))
            deployments.append(Deployment(site.organization, site.name,
                                          "failed" if rng.random() < 0.1 else "success",
                                          round(float(rng.uniform(20, 600)), 1), at))

    # Quotas: the first organization sits exactly at its server limit, the
    # second is over it, the rest have room (or no limit at all).
    end_day = (start + timedelta(days=days)).date()
    period_start = end_day.replace(day=1)
    period_end = (period_start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    licences: list[Licence] = []
    for k, o in enumerate(orgs):
        mine = [s for s in server_list if s.organization == o.slug]
        cores = sum(s.cpu_cores for s in mine)
        mem = sum(s.memory_total_bytes for s in mine)
        disk = sum(s.disk_total_bytes for s in mine)
        n_deploy = sum(1 for d in deployments if d.organization == o.slug)
        if k == 0:
            factor, extra = 1.0, 0
        elif k == 1:
            factor, extra = 0.75, -1
        else:
            factor, extra = 2.0, 5
        licences.append(Licence(
            organization=o.slug,
            max_servers=max(0, len(mine) + extra),
            max_applications=max(0, sum(1 for a in applications if a.organization == o.slug) + extra),
            max_databases=None if k > 2 else max(0, sum(1 for d in databases if d.organization == o.slug) + extra),
            max_deployments_per_month=max(0, int(n_deploy * factor)),
            max_cpu_cores=int(cores * factor), max_memory_bytes=int(mem * factor),
            max_disk_bytes=int(disk * factor),
            billing_period_start=period_start, billing_period_end=period_end,
        ))

    labels = _place_anomalies(rng, server_list, start, days, interval_seconds, anomalies_per_server)
    return Fleet(seed, start, days, interval_seconds, site_interval_seconds, orgs, users, server_list,
                 sites, applications, databases, deployments, licences, labels)


def _place_anomalies(rng: np.random.Generator, servers: list[Server], start: datetime, days: int,
                     interval: int, rate: float) -> list[AnomalyLabel]:
    """Anomalies start after the first 40 % of the period so detectors have history to learn from."""
    labels = []
    total = days * 86400
    for s in servers:
        for _ in range(int(rng.poisson(rate))):
            kind = "spike" if rng.random() < 0.6 else "level_shift"
            at = int(rng.uniform(0.4 * total, 0.95 * total)) // interval * interval
            if kind == "spike":
                length = int(rng.integers(10, 61)) * interval           # 5 to 30 minutes at 30 s
                labels.append(AnomalyLabel(s.organization, s.name, "cpu_percent",
                                           start + timedelta(seconds=at),
                                           start + timedelta(seconds=min(total, at + length)),
                                           kind, round(float(rng.uniform(92, 99)), 1)))
            else:
                length = int(rng.integers(6 * 3600, 48 * 3600)) // interval * interval
                labels.append(AnomalyLabel(s.organization, s.name, "memory_percent",
                                           start + timedelta(seconds=at),
                                           start + timedelta(seconds=min(total, at + length)),
                                           kind, round(float(rng.uniform(15, 30)), 1)))
    return labels


# ---------------------------------------------------------------- series

def _daily_weekly(ts: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    hours = ts.hour.to_numpy() + ts.minute.to_numpy() / 60 + ts.second.to_numpy() / 3600
    daily = 0.5 * (1 - np.cos(2 * np.pi * (hours - 3) / 24))       # 0 at 03:00, 1 at 15:00
    weekly = np.where(ts.day_of_week.to_numpy() >= 5, 0.55, 1.0)      # weekends are quieter
    return daily, weekly


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    return lfilter([1.0], [1.0, -phi], rng.normal(0, sigma, n))


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    y, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[x[0] * (1 - alpha)])
    return y


def _server_series(fleet: Fleet, s: Server) -> pd.DataFrame:
    rng = np.random.default_rng([fleet.seed, 1, s.index])
    ts = fleet.timestamps()
    n = len(ts)
    daily, weekly = _daily_weekly(ts)
    load_shape = daily * weekly

    cpu = (s.cpu_base + s.cpu_daily_amplitude * load_shape
           + _ar1(rng, n, 0.995, 0.35)            # slow TSBS-like wander
           + rng.normal(0, 2.0, n))
    mem_pct = (s.memory_base + 12 * load_shape + np.linspace(0, rng.uniform(0, 5), n)
               + _ar1(rng, n, 0.99, 0.2) + rng.normal(0, 0.8, n))
    for lab in fleet.labels:
        if lab.server != s.name or lab.organization != s.organization:
            continue
        i0 = int((lab.start - fleet.start).total_seconds()) // fleet.interval_seconds
        i1 = int((lab.end - fleet.start).total_seconds()) // fleet.interval_seconds
        if lab.kind == "spike":
            cpu[i0:i1] = lab.magnitude + rng.normal(0, 1.0, i1 - i0)
        else:
            mem_pct[i0:i1] += lab.magnitude
    cpu = np.clip(cpu, 0, 100).round(2)
    mem_pct = np.clip(mem_pct, 1, 99)
    # At the precision a Linux collector reports: /proc/meminfo in kB, statvfs in 4 KiB
    # blocks, /proc/diskstats in 512-byte sectors (what server_samples stores as units).
    mem_used = (mem_pct / 100 * s.memory_total_bytes).astype(np.int64) // KIB * KIB
    mem_pct = (mem_used / s.memory_total_bytes * 100).round(2)    # collectors report percents to 2 decimals

    # disk: positive increments (writes) accumulate from start to end percent
    steps = rng.gamma(0.5, 1.0, n) * (0.3 + load_shape)
    fill = np.cumsum(steps) / steps.sum()
    disk_pct = s.disk_start_percent + (s.disk_end_percent - s.disk_start_percent) * fill
    disk_used = np.minimum(disk_pct / 100 * s.disk_total_bytes, s.disk_total_bytes).astype(np.int64) // BLOCK * BLOCK
    disk_pct = (disk_used / s.disk_total_bytes * 100).round(2)

    # Byte volumes are drawn per sample of the catalog's collection interval and
    # scaled to this fleet's interval (a 60 s sample moves twice as much).
    busy = 0.2 + load_shape
    interval = fleet.interval_seconds
    read = (rng.lognormal(13.5, 0.6, n) * busy * interval / COLLECTION_INTERVAL_SECONDS).astype(np.int64)
    write = (rng.lognormal(13.0, 0.6, n) * busy * interval / COLLECTION_INTERVAL_SECONDS).astype(np.int64)
    read, write = read // SECTOR * SECTOR, write // SECTOR * SECTOR
    rx = (rng.lognormal(15.0, 0.5, n) * busy * interval / COLLECTION_INTERVAL_SECONDS).astype(np.int64)
    tx = (rng.lognormal(15.6 if s.role == "web" else 14.5, 0.5, n) * busy * interval
          / COLLECTION_INTERVAL_SECONDS).astype(np.int64)

    load1 = np.maximum(cpu / 100 * s.cpu_cores * (1 + rng.normal(0, 0.08, n)), 0)
    load5 = _ema(load1, interval / 300)
    load15 = _ema(load1, interval / 900)
    running = s.containers_total - rng.binomial(min(s.containers_total, 3), 0.05, n)

    return pd.DataFrame({
        "collected_at": ts,
        "cpu_percent": cpu,
        "load_1m": load1.round(2), "load_5m": load5.round(2), "load_15m": load15.round(2),
        "cpu_cores": np.full(n, s.cpu_cores, dtype=np.int64),
        "memory_total_bytes": np.full(n, s.memory_total_bytes, dtype=np.int64),
        "memory_used_bytes": mem_used,
        "memory_available_bytes": s.memory_total_bytes - mem_used,
        "memory_percent": mem_pct,
        "disk_total_bytes": np.full(n, s.disk_total_bytes, dtype=np.int64),
        "disk_used_bytes": disk_used,
        "disk_available_bytes": s.disk_total_bytes - disk_used,
        "disk_percent": disk_pct,
        "disk_read_bytes": read, "disk_write_bytes": write,
        "network_rx_bytes": rx, "network_tx_bytes": tx,
        "containers_running": running.astype(np.int64),
        "containers_total": np.full(n, s.containers_total, dtype=np.int64),
    }).pipe(_with_interval, interval, COLLECTION_INTERVAL_SECONDS)


def _site_series(fleet: Fleet, site: Site) -> pd.DataFrame:
    rng = np.random.default_rng([fleet.seed, 2, site.index])
    ts = fleet.timestamps(fleet.site_interval_seconds)
    n = len(ts)
    daily, weekly = _daily_weekly(ts)
    shape = 0.15 + daily * weekly
    rpm = site.max_requests_per_minute * rng.uniform(0.1, 0.6) * shape * np.exp(rng.normal(0, 0.15, n))
    minutes = fleet.site_interval_seconds / 60
    requests = (rpm * minutes).astype(np.int64)
    is_up = rng.random(n) > 0.002
    requests = np.where(is_up, requests, 0)
    return pd.DataFrame({
        "collected_at": ts,
        "memory_used_mb": (site.max_memory_mb * np.clip(0.3 + 0.4 * shape + rng.normal(0, 0.03, n), 0, 1.2)).round(1),
        "cpu_percent": np.clip(site.max_cpu_percent * 0.7 * shape + rng.normal(0, 2, n), 0, 100).round(2),
        "disk_used_mb": (site.max_disk_mb * np.linspace(rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.9), n)).round(1),
        "bandwidth_mb": (requests * rng.uniform(0.02, 0.2)).round(2),
        "requests": requests,
        "active_requests": np.maximum(rpm / 60 * 0.3 + rng.normal(0, 1, n), 0).astype(np.int64),
        "response_time_ms": np.clip(80 + 120 * shape + rng.gamma(2, 15, n), 1, None).round(1),
        "is_up": is_up,
    }).pipe(_with_interval, fleet.site_interval_seconds, SITE_COLLECTION_INTERVAL_SECONDS)


def _with_interval(df: pd.DataFrame, interval: int, default: int) -> pd.DataFrame:
    """Byte and request counts are per sample: a fleet sampled at another interval than the
    catalog's default says so in every row (``interval_seconds``), so rates come out true.
    At the default the column is left out (absent = default), files stay as they were."""
    if interval != default:
        df["interval_seconds"] = np.full(len(df), interval, dtype=np.int64)
    return df
