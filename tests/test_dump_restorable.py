"""A pg_dump of the database restores: TimescaleDB's catalog satisfies its own foreign keys.

TimescaleDB 2.23 keeps a continuous aggregate's pending materialization ranges after the
aggregate is dropped, and pg_restore then fails on them (the CI failure of
test_drill_backup's logical dump: revision 0010 drops every aggregate, and a refresh
policy had left a range of one). `rmp doctor` names such rows; every `rmp migrate
upgrade` removes them (sql/idempotent/timescaledb-catalog-orphans.sql)."""

from __future__ import annotations

from drill_support import orphan_an_interrupted_refresh, pending_ranges

from rmp import doctor, migrations


def test_an_orphaned_materialization_range_is_named_by_doctor_and_removed_by_upgrade(db, migrated_url):
    mat_id = orphan_an_interrupted_refresh(db)
    # the engine's behaviour this works around: the drop left the claimed range behind
    # (when an upgrade deletes it with the aggregate, this fails: the workaround can go)
    assert pending_ranges(db, mat_id) == 1

    bad = doctor.problems(doctor.run(db))
    assert [c.name for c in bad] == ["dump restorable"]
    assert ("1 row(s) of _timescaledb_catalog.continuous_aggs_materialization_ranges break "
            "continuous_aggs_materialization_ranges_materialization_id_fkey "
            "((materialization_id) not in _timescaledb_catalog.continuous_agg)") in bad[0].detail

    assert migrations.upgrade(migrated_url) == migrations.head()     # at head: re-applies sql/idempotent
    assert pending_ranges(db, mat_id) == 0
    assert doctor.problems(doctor.run(db)) == []
    # the live aggregates' catalog is untouched
    assert db.execute("select count(*) from _timescaledb_catalog.continuous_agg"
                      " where user_view_schema = 'metrics'").fetchone()[0] == 5
