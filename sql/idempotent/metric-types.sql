-- metric-types: the catalog of narrow metric types (metrics.metric_samples).
-- Re-applied on every migration: adding a type is adding a line; existing
-- rows keep their ids and get the new unit/description/kind.

insert into metrics.metric_types (name, unit, description, kind) values
    ('cpu_percent',           'percent',      'CPU utilisation',                                 'gauge'),
    ('memory_percent',        'percent',      'memory in use',                                   'gauge'),
    ('memory_used_bytes',     'bytes',        'memory in use',                                   'gauge'),
    ('disk_percent',          'percent',      'disk space in use',                               'gauge'),
    ('disk_used_bytes',       'bytes',        'disk space in use',                               'gauge'),
    ('disk_io_reads',         'operations',   'disk read operations',                            'counter'),
    ('disk_io_writes',        'operations',   'disk write operations',                           'counter'),
    ('network_rx_bytes',      'bytes',        'bytes received',                                  'counter'),
    ('network_tx_bytes',      'bytes',        'bytes sent',                                      'counter'),
    ('load_1m',               'processes',    '1-minute load average',                           'gauge'),
    ('wait_time_ms',          'milliseconds', 'database wait time',                              'gauge'),
    ('connection_count',      'connections',  'open database connections',                       'gauge'),
    ('batch_requests_sec',    'requests/s',   'database batch requests per second',              'gauge'),
    ('page_life_expectancy',  'seconds',      'seconds a page stays in the buffer pool',         'gauge'),
    ('blocked_processes',     'processes',    'processes blocked on a lock',                     'gauge'),
    ('gpu_utilization',       'percent',      'GPU utilisation',                                 'gauge'),
    ('gpu_temperature',       'celsius',      'GPU temperature',                                 'gauge'),
    ('gpu_memory_used_bytes', 'bytes',        'GPU memory in use',                               'gauge'),
    ('containers_running',    'containers',   'running containers',                              'gauge'),
    ('response_time_ms',      'milliseconds', 'response time',                                   'gauge'),
    -- a series whose meaning the loader cannot tell (e.g. a benchmark's file): no unit, no range
    ('generic',               'unknown',      'a series of unknown meaning, unbounded',          'gauge')
on conflict (name) do update set
    unit = excluded.unit,
    description = excluded.description,
    kind = excluded.kind;
