"""The tenancy model of a synthetic fleet: organizations, users, servers, sites,
applications, databases, deployments, licences and the anomaly labels.

Plain records with no behaviour: ``ingest.generator`` creates them,
``ingest.fleet_writers`` writes them to the database or to files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime


@dataclass(frozen=True)
class Organization:
    slug: str
    name: str
    parent: str | None = None          # parent slug


@dataclass(frozen=True)
class User:
    email: str
    full_name: str
    organization: str                  # slug
    role: str                          # owner | admin | member


@dataclass(frozen=True)
class Server:
    index: int                         # position in the fleet, seeds its series
    organization: str                  # slug
    name: str                          # unique within the organization
    hostname: str
    role: str
    cpu_cores: int
    memory_total_bytes: int
    disk_total_bytes: int
    cpu_base: float                    # percent at the quiet hour
    cpu_daily_amplitude: float         # percent added at the busy hour
    memory_base: float                 # percent
    disk_start_percent: float
    disk_end_percent: float            # disks fill linearly-ish between the two
    containers_total: int


@dataclass(frozen=True)
class Site:
    index: int
    organization: str
    server: str                        # server name (same organization)
    name: str
    max_memory_mb: int
    max_cpu_percent: float
    max_disk_mb: int
    max_bandwidth_mb: int
    max_requests_per_minute: int


@dataclass(frozen=True)
class Application:
    organization: str
    server: str | None
    name: str


@dataclass(frozen=True)
class Database:
    organization: str
    server: str | None
    name: str
    engine: str


@dataclass(frozen=True)
class Deployment:
    organization: str
    site: str                          # site name
    status: str
    build_seconds: float
    deployed_at: datetime


@dataclass(frozen=True)
class Licence:
    organization: str
    max_servers: int | None
    max_applications: int | None
    max_databases: int | None
    max_deployments_per_month: int | None
    max_cpu_cores: int | None
    max_memory_bytes: int | None
    max_disk_bytes: int | None
    billing_period_start: date
    billing_period_end: date


@dataclass(frozen=True)
class AnomalyLabel:
    organization: str
    server: str
    metric: str                        # a server_metrics column
    start: datetime
    end: datetime                      # exclusive
    kind: str                          # spike | level_shift
    magnitude: float                   # percent points added (spike: target level)
    server_id: int | None = None       # filled in once written to a database

    def to_json(self) -> dict:
        d = asdict(self)
        d["start"], d["end"] = self.start.isoformat(), self.end.isoformat()
        return d

