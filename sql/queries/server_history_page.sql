-- server_history_page: one page of a server's raw samples, newest first, by
-- keyset pagination: pass the collected_at of the last row of the previous
-- page as `before` ('infinity' for the first page). Uses the
-- (server_id, collected_at desc) index; cost does not grow with the page number.
-- psql: psql -v server_id=1 -v before=infinity -v page_size=100 -f sql/queries/server_history_page.sql
select
    collected_at,
    cpu_percent,
    load_1m,
    memory_used_bytes,
    memory_percent,
    disk_used_bytes,
    disk_percent,
    network_rx_bytes,
    network_tx_bytes
from metrics.server_metrics
where server_id = :server_id
  and collected_at < :'before'::timestamptz
order by collected_at desc
limit :page_size;
