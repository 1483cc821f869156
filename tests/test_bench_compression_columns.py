"""The compact layout bench.compression_columns measures is lossless: every column of
metrics.server_metrics comes back exactly from it (no database)."""

import pandas as pd
import pytest

from bench.compression_columns import (
    _at_collector_precision,
    _frame,
    _lossless_compact,
    _lossless_decoded,
)


@pytest.mark.parametrize("collector_precision", [True, False])
def test_lossless_compact_layout_gives_every_value_back(collector_precision):
    data = _frame(3, 1)
    if collector_precision:
        data = _at_collector_precision(data)
    else:   # the generator reports a collector's units: make some bytes whole bytes off them
        odd = (data.index % 3).to_numpy()
        data["memory_used_bytes"] += odd
        data["memory_available_bytes"] -= odd
        data["disk_read_bytes"] += odd * 5
    compact = _lossless_compact(data)
    back = _lossless_decoded(compact)[list(data.columns)]
    pd.testing.assert_frame_equal(back, data, check_dtype=False)
    # whole bytes that are not multiples of the collector's unit keep their remainder
    assert (compact["memory_used_rem"] != 0).any() != collector_precision
    # the parts a Linux collector makes constant are constant on its data
    if collector_precision:
        for column in ("memory_used_rem", "disk_used_rem", "disk_read_rem", "disk_write_rem",
                       "memory_available_residual", "disk_available_residual"):
            assert (compact[column] == 0).all(), column
        assert (compact["memory_percent_residual"].abs() <= 1).all()
