"""ingest.arrownp: Arrow columns read as numpy without pyarrow's pandas-importing converters."""

from __future__ import annotations

import io
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv

from ingest import arrownp

CSV = b"n,x,at,ok\n1,1.5,2026-01-01T00:00:00Z,true\n,2.25,,\n3,,2026-01-01T00:00:30Z,false\n4,-1,2026-01-01T00:01:00Z,t\n"
TYPES = {"n": pa.int64(), "x": pa.float64(), "at": pa.timestamp("us", tz="UTC"), "ok": pa.bool_()}


def _table() -> pa.Table:
    return pacsv.read_csv(io.BytesIO(CSV), convert_options=pacsv.ConvertOptions(column_types=TYPES,
                                                                                    true_values=["true", "t"],
                                                                                    false_values=["false", "f"]))


def test_values_and_null_masks_of_each_type():
    t = _table()
    n, n_null = arrownp.values(t.column("n"), fill=-1)
    assert n.tolist() == [1, -1, 3, 4] and n_null.tolist() == [False, True, False, False]
    x, x_null = arrownp.values(t.column("x"))
    assert x.tolist() == [1.5, 2.25, 0.0, -1.0] and x_null.tolist() == [False, False, True, False]
    at, at_null = arrownp.values(t.column("at"))
    base = 1_767_225_600_000_000     # 2026-01-01T00:00:00Z in microseconds since 1970
    assert at.tolist() == [base, 0, base + 30_000_000, base + 60_000_000]
    assert at_null.tolist() == [False, True, False, False]
    ok, ok_null = arrownp.values(t.column("ok"))
    assert ok.tolist() == [True, False, False, True] and ok_null.tolist() == [False, True, False, False]


def test_sliced_and_chunked_arrays_keep_their_offsets():
    arr = pa.chunked_array([pa.array([1, None, 3], pa.int64()), pa.array([4, 5, None, 7], pa.int64())])
    v, nulls = arrownp.values(arr.slice(2, 4))          # 3 | 4, 5, None: two chunks, an offset
    assert v.tolist() == [3, 4, 5, 0] and nulls.tolist() == [False, False, False, True]
    bools = pa.array([True, None, False, True, True, None, False, False, True], pa.bool_()).slice(3)
    b, b_null = arrownp.values(bools)
    assert b.tolist() == [True, True, False, False, False, True]
    assert b_null.tolist() == [False, False, True, False, False, False]
    assert arrownp.null_mask(pa.nulls(3)).tolist() == [True, True, True]
    assert arrownp.values(pa.array([], pa.float64()))[0].tolist() == []


def test_a_load_path_does_not_import_pandas():
    # pandas costs every `rmp ingest` a third of a second; the fast path must not pull it in
    code = (
        "import io, sys\n"
        "import ingest.cli, ingest.loader, ingest.fastcsv\n"
        "from ingest import arrownp\n"
        "import pyarrow as pa, pyarrow.csv as pacsv\n"
        f"t = pacsv.read_csv(io.BytesIO({CSV!r}))\n"
        "[arrownp.values(t.column(c)) for c in ('n', 'x')]\n"
        "print(sorted(m for m in ('pandas', 'pyarrow.compute', 'rich') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
