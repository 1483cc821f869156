"""Scaling events end to end: generated from load, loaded by `rmp ingest` (CSV and
NDJSON, organization-level events too), summarised per organization and server.

Hand-built fixture: organization acme with servers web-1 and web-2, globex
with web-1 (a name used twice), events written out below.
"""

from __future__ import annotations

import json

import pytest

from ingest.generator import generate_fleet
from ingest.loader import load_file
from ingest.scaling_events import (
    SCALE_DOWN_PERCENT,
    SCALE_UP_PERCENT,
    scaling_events,
    write_scaling_events,
)
from transform.dbt_runner import run_dbt

HEADER = ("organization,server,event_type,trigger_reason,before_state,after_state,success,error_details,"
          "cost_impact,executed_at,completed_at,outcome\n")
EVENTS = [
    # acme web-1: two scale-ups (60 s and 180 s, +7.30 each, cpu 80->50 and 90->60), one failed scale-up
    'acme,web-1,scale_up,cpu,"{""cpu_cores"": 2, ""cpu_percent"": 80}","{""cpu_cores"": 4, ""cpu_percent"": 50}",'
    'true,,7.30,2025-03-01T10:00:00Z,2025-03-01T10:01:00Z,succeeded',
    'acme,web-1,scale_up,cpu,"{""cpu_cores"": 4, ""cpu_percent"": 90}","{""cpu_cores"": 8, ""cpu_percent"": 60}",'
    'true,,7.30,2025-03-02T10:00:00Z,2025-03-02T10:03:00Z,succeeded',
    'acme,web-1,scale_up,cpu,"{""cpu_cores"": 8, ""cpu_percent"": 95}","{""cpu_cores"": 8, ""cpu_percent"": 97}",'
    'false,no capacity,0,2025-03-03T10:00:00Z,2025-03-03T10:10:00Z,failed',
    # acme web-2: a cancelled scale-down
    'acme,web-2,scale_down,cpu,"{""cpu_cores"": 8, ""cpu_percent"": 5}","{""cpu_cores"": 8, ""cpu_percent"": 6}",'
    'false,,0,2025-03-01T12:00:00Z,2025-03-01T12:00:20Z,cancelled',
    # acme itself: a plan change (no server)
    'acme,,manual_scale,plan,"{""plan"": ""standard""}","{""plan"": ""pro""}",true,,49,2025-03-01T09:00:00Z,'
    '2025-03-01T09:00:30Z,succeeded',
    # globex web-1: named with its organization
    'globex,web-1,scale_down,cpu,"{""cpu_cores"": 4, ""cpu_percent"": 8}","{""cpu_cores"": 2, ""cpu_percent"": 15}",'
    'true,,-14.60,2025-03-01T11:00:00Z,2025-03-01T11:02:00Z,succeeded',
]
BAD = [
    'acme,web-9,scale_up,cpu,{},{},true,,0,2025-03-04T10:00:00Z,2025-03-04T10:01:00Z,succeeded',      # unknown server
    ',,scale_up,cpu,{},{},true,,0,2025-03-04T11:00:00Z,2025-03-04T11:01:00Z,succeeded',              # neither
    'acme,web-1,scale_sideways,cpu,{},{},true,,0,2025-03-04T12:00:00Z,2025-03-04T12:01:00Z,succeeded',  # bad type
    'acme,web-1,scale_up,cpu,{},{},true,,0,2025-03-04T13:00:00Z,2025-03-04T13:01:00Z,maybe',          # bad outcome
]


@pytest.fixture
def tenancy_rows(db):
    ids = {}
    for slug in ("acme", "globex"):
        ids[slug] = db.execute("insert into tenancy.organizations (name, slug) values (%s, %s) returning id",
                               (slug, slug)).fetchone()[0]
    for slug, name in (("acme", "web-1"), ("acme", "web-2"), ("globex", "web-1")):
        ids[f"{slug}/{name}"] = db.execute("insert into tenancy.servers (organization_id, name) values (%s, %s) "
                                           "returning id", (ids[slug], name)).fetchone()[0]
    return ids


def test_generated_events_follow_load_with_every_outcome():
    fleet = generate_fleet(seed=42, organizations=3, servers=50, days=7)
    events = scaling_events(fleet)
    assert len(events) == 72
    servers = events[events.server.notna()]
    before = servers.before_state.map(lambda s: json.loads(s)["cpu_percent"])
    assert (before[servers.event_type == "scale_up"] >= SCALE_UP_PERCENT).all()
    assert (before[servers.event_type == "scale_down"] <= SCALE_DOWN_PERCENT).all()
    assert set(servers.outcome) == {"succeeded", "failed", "cancelled"}
    # only a succeeded event changes cores and costs something
    changed = servers.apply(lambda r: json.loads(r.after_state)["cpu_cores"] != json.loads(r.before_state)["cpu_cores"],
                            axis=1)
    assert (changed == (servers.outcome == "succeeded")).all()
    assert (servers[servers.outcome != "succeeded"].cost_impact == 0).all()
    assert ((events.completed_at - events.executed_at).dt.total_seconds() > 0).all()
    # one organization-level event per organization
    assert sorted(events[events.server.isna()].organization) == sorted(o.slug for o in fleet.organizations)
    small = generate_fleet(seed=3, organizations=2, servers=3, days=2)
    assert scaling_events(small).equals(scaling_events(small))   # seeded


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_ingest_loads_server_and_organization_events_once(db, tenancy_rows, migrated_url, tmp_path, fmt):
    path = tmp_path / f"events.{fmt}"
    if fmt == "csv":
        path.write_text(HEADER + "\n".join(EVENTS + BAD) + "\n")
    else:
        import csv
        import io
        rows = list(csv.DictReader(io.StringIO(HEADER + "\n".join(EVENTS + BAD) + "\n")))
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if v != ""}) + "\n" for r in rows))
    first = load_file(path, migrated_url)
    again = load_file(path, migrated_url)
    assert (first.loaded, first.rejected) == (6, 4)
    assert (again.loaded, again.duplicates, again.rejected) == (0, 6, 4)
    first_bad = 8 if fmt == "csv" else 7   # CSV counts its header line
    assert [(r.line, r.field) for r in first.rejections] == [
        (first_bad, "server"), (first_bad + 1, "server"), (first_bad + 2, "event_type"), (first_bad + 3, "outcome")]
    ids = tenancy_rows
    got = db.execute("select organization_id, server_id, event_type, outcome, cost_impact::float8 "
                     "from metrics.scaling_events order by executed_at").fetchall()
    assert got == [
        (ids["acme"], None, "manual_scale", "succeeded", 49.0),
        (ids["acme"], ids["acme/web-1"], "scale_up", "succeeded", 7.3),
        (ids["globex"], ids["globex/web-1"], "scale_down", "succeeded", -14.6),
        (ids["acme"], ids["acme/web-2"], "scale_down", "cancelled", 0.0),
        (ids["acme"], ids["acme/web-1"], "scale_up", "succeeded", 7.3),
        (ids["acme"], ids["acme/web-1"], "scale_up", "failed", 0.0),
    ]


def test_summary_mart_counts_durations_costs_and_load(db, tenancy_rows, migrated_url, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "\n".join(EVENTS) + "\n")
    assert load_file(path, migrated_url).loaded == 6
    result = run_dbt(["run", "--select", "+scaling_event_summary"], migrated_url, work_dir=tmp_path)
    assert result.exit_code == 0, result.exception
    ids = tenancy_rows
    got = db.execute(
        "select organization_id, server_id, event_type, outcome, count_events, duration_avg_seconds, "
        "cost_impact_total, cpu_before_avg_percent, cpu_after_avg_percent, cpu_cores_change_total "
        "from marts.scaling_event_summary order by 1, 2 nulls first, 3, 4").fetchall()
    assert got == [
        (ids["acme"], None, "manual_scale", "succeeded", 1, 30.0, 49.0, None, None, 0),
        (ids["acme"], ids["acme/web-1"], "scale_up", "failed", 1, 600.0, 0.0, 95.0, 97.0, 0),
        (ids["acme"], ids["acme/web-1"], "scale_up", "succeeded", 2, 120.0, 14.6, 85.0, 55.0, 6),
        (ids["acme"], ids["acme/web-2"], "scale_down", "cancelled", 1, 20.0, 0.0, 5.0, 6.0, 0),
        (ids["globex"], ids["globex/web-1"], "scale_down", "succeeded", 1, 120.0, -14.6, 8.0, 15.0, -2),
    ]
    # the report's section (analytics/scaling_section.py): per organization and event type
    from analytics.report import write_report
    from analytics.scaling_section import gather_scaling

    rows, note = gather_scaling(db)
    assert note is None
    assert [(r["organization"], r["event_type"], r["events"], r["succeeded"], r["failed"], r["cancelled"],
             round(r["duration_avg_seconds"]), r["cpu_cores_change_total"]) for r in rows] == [
        ("acme", "manual_scale", 1, 1, 0, 0, 30, 0),
        ("acme", "scale_down", 1, 0, 0, 1, 20, 0),
        ("acme", "scale_up", 3, 2, 1, 0, 280, 6),
        ("globex", "scale_down", 1, 1, 0, 0, 120, -2),
    ]
    # the report needs some hourly data of its own to draw the fleet chart
    db.execute("insert into metrics.server_metrics (server_id, collected_at, cpu_percent, memory_percent, "
               "disk_percent) select %s, '2025-03-01T10:00:00Z'::timestamptz + g * interval '30 s', 50, 50, 50 "
               "from generate_series(0, 239) g", (ids["acme/web-1"],))
    db.execute("call refresh_continuous_aggregate('metrics.server_metrics_1h', null, null)")
    html = (write_report(migrated_url, tmp_path / "reports") / "index.html").read_text()
    section = html.split("<h2>Scaling events</h2>")[1]
    assert "<td>acme</td><td>scale_up</td><td>3</td><td>2</td><td>1</td><td>0</td><td>280</td><td>14.60</td>" in section


def test_written_files_load_back(db, migrated_url, tmp_path):
    from ingest.fleet_writers import write_tenancy

    fleet = generate_fleet(seed=7, organizations=2, servers=4, days=2)
    write_tenancy(db, fleet)
    expected = len(scaling_events(fleet))
    for fmt in ("csv", "ndjson"):
        result = load_file(write_scaling_events(fleet, tmp_path / fmt, fmt), migrated_url)
        assert result.rejected == 0
        assert result.loaded + result.duplicates == expected
    assert db.execute("select count(*) from metrics.scaling_events").fetchone()[0] == expected
    assert db.execute("select count(*) from metrics.scaling_events where server_id is null").fetchone()[0] == len(
        fleet.organizations)


def test_rmp_generate_writes_the_events_beside_the_metrics(tmp_path):
    from click.testing import CliRunner

    from ingest.cli import generate

    result = CliRunner().invoke(generate, ["--servers", "3", "--days", "2", "--out", str(tmp_path), "--no-db",
                                           "--format", "ndjson"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "scaling_events.ndjson").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert {e["event_type"] for e in events} >= {"manual_scale"}
    assert all(e["organization"] for e in events)
