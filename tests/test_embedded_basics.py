

def test_timescaledb_extension_present(raw_conn):
    version = raw_conn.execute(
        "select extversion from pg_extension where extname = 'timescaledb'"
    ).fetchone()[0]
    assert version.startswith("2.")
