"""The CSV fast path: plain files parsed and validated a batch at a time, by column.

Taken when a file is uncompressed and holds no double quote and no bare
carriage return (what collectors and exporters write): then one line is one
record and line numbers follow from positions. A batch of lines is split
with numpy (newline and comma positions; lines with the wrong number of
fields or empty are quarantined as such), parsed by pyarrow's CSV reader into
typed arrays and checked with vectorised comparisons against the column's
catalog type and meaning (percent 0-100, sizes >= 0, known servers). Rows a
check flags go through ``RowValidator.row``, which stays the one authority
for the reason; a batch pyarrow cannot parse (a stray word in a number
column) is validated by the general path (``ColumnValidator``). Valid rows
leave as columns (``payload.Columns``) for the binary COPY encoder.
"""

from __future__ import annotations

import functools
import io
import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ingest import arrownp
from ingest.coltypes import col_type
from ingest.copybinary import PG_EPOCH_US, Field, jsonb
from ingest.formats import Record
from ingest.payload import Columns, Rows
from ingest.validate import BadValue, ColumnValidator, Rejection, RowValidator

NL, COMMA, CR = 10, 44, 13
READ_BLOCK = 1 << 22
MIN_PART_BYTES = 1 << 20     # smaller files are not worth a worker process per range


def fast_eligible(path: Path) -> bool:
    """Uncompressed, no quotes, no bare CR (the csv module would split records differently)."""
    if path.suffix.lower() == ".gz":
        return False
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm.find(b'"') != -1:
            return False
        if mm.find(b"\r") == -1:
            return True
        buf = np.frombuffer(mm, dtype=np.uint8)
        cr = np.flatnonzero(buf == CR)
        ok = bool(np.all(cr + 1 < len(buf)) and np.all(buf[np.minimum(cr + 1, len(buf) - 1)] == NL))
        del buf
        return ok


def data_start(path: Path) -> int:
    """Byte offset of the first data line (after the header line)."""
    with open(path, "rb") as fh:
        header = fh.readline()
    return len(header)


def split_ranges(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """(start byte, end byte, first line number) of ``parts`` ranges cut at line starts."""
    start = data_start(path)
    size = path.stat().st_size
    if parts <= 1 or size - start < parts * MIN_PART_BYTES:
        return [(start, size, 2)]
    cuts = [start]
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for k in range(1, parts):
            nl = mm.find(b"\n", start + (size - start) * k // parts)
            if nl == -1 or nl + 1 >= size:
                break
            if nl + 1 > cuts[-1]:
                cuts.append(nl + 1)
        cuts.append(size)
        out = []
        line = 2
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            out.append((lo, hi, line))
            line += mm[lo:hi].count(b"\n")
    return out


@dataclass
class Chunk:
    data: bytes            # whole lines (the last one may lack its newline at end of file)
    starts: np.ndarray     # offset of each line in data
    ends: np.ndarray       # offset of each line's end (before \r\n / \n)
    first_line: int
    position: int          # bytes of the file consumed after this chunk

    def raw(self, line: int) -> str:
        i = line - self.first_line
        return self.data[self.starts[i]:self.ends[i]].decode("utf-8", errors="replace")


def read_chunks(path: Path, start: int, end: int, first_line: int, batch_rows: int) -> Iterator[Chunk]:
    """Chunks of ``batch_rows`` lines from bytes [start, end) of ``path``."""
    line = first_line
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start
        pending = b""
        eof = False
        while True:
            nls = np.flatnonzero(np.frombuffer(pending, dtype=np.uint8) == NL)
            while len(nls) < batch_rows and not eof:
                block = fh.read(min(READ_BLOCK, left)) if left > 0 else b""
                left -= len(block)
                if not block:
                    eof = True
                    break
                more = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == NL) + len(pending)
                pending += block
                nls = np.concatenate((nls, more))
            if len(nls) >= batch_rows:
                cut = int(nls[batch_rows - 1]) + 1
                data, pending = pending[:cut], pending[cut:]
                line_ends = nls[:batch_rows]
            elif pending:
                data, pending = pending, b""
                line_ends = nls if (len(data) and data[-1] == NL) else np.append(nls, len(data))
            else:
                return
            starts = np.concatenate(([0], line_ends[:-1] + 1)).astype(np.int64)
            ends = line_ends.astype(np.int64)
            buf = np.frombuffer(data, dtype=np.uint8)
            has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == CR)
            ends = ends - has_cr
            yield Chunk(data, starts, ends, line, end - left - len(pending))
            line += len(starts)


class FastCsvValidator:
    """Validates chunks of a quote-free CSV; see the module docstring."""

    def __init__(self, rv: RowValidator, fields: list[str]):
        self.rv, self.fields = rv, fields
        self.ncols = len(fields)
        self.fallback = ColumnValidator(rv, fields)
        self.kind = "site" if rv.target.table == "site_usage" else "server"
        self.cols = {c.name: c for c in rv.columns}
        self.types: dict[str, pa.DataType] = {}
        for name, _parse, _check, _required in rv._data:
            t = col_type(self.cols[name].type)
            self.types[name] = {"int": pa.int64(), "float": pa.float64(), "ts": pa.timestamp("us", tz="UTC"),
                                "bool": pa.bool_()}.get(t.kind, pa.string())
        for f in fields:
            if f not in self.types:   # entity references: ids are numbers, names text
                self.types[f] = pa.int64() if f.endswith("_id") else pa.string()
        r = rv.resolver
        self.known_ids = np.fromiter(r.ids, dtype=np.int64) if r.ids else np.empty(0, np.int64)
        self.known_metric_ids = np.fromiter(r.metric_ids, dtype=np.int64) if r.metric_ids else np.empty(0, np.int64)

    @functools.cached_property
    def _names(self) -> dict[str, tuple[pa.Array, np.ndarray]]:
        """Look-up sets of files that name their servers/sites/metrics instead of giving ids
        (built on first use: files of ids never pay for them). Ambiguous names map to -1
        and are left to RowValidator for the message."""
        r = self.rv.resolver
        return {
            "name": (pa.array(list(r.by_name), pa.string()),
                     np.array([-1 if v is None else v for v in r.by_name.values()], dtype=np.int64)),
            "org": (pa.array([f"{o}\x1f{n}" for o, n in r.by_org_name], pa.string()),
                    np.array(list(r.by_org_name.values()), dtype=np.int64)),
            "metric": (pa.array(list(r.metric_by_name), pa.string()),
                       np.array(list(r.metric_by_name.values()), dtype=np.int64)),
        }

    # ------------------------------------------------------------ chunk
    def validate(self, chunk: Chunk) -> tuple[list[Columns | Rows], list[Rejection]]:
        buf = np.frombuffer(chunk.data, dtype=np.uint8)
        # commas per line from the sorted comma positions (a running count over every byte
        # would build an 8-byte integer per byte of the chunk)
        commas = np.flatnonzero(buf == COMMA)
        found = np.searchsorted(commas, chunk.ends) - np.searchsorted(commas, chunk.starts) + 1
        ok = found == self.ncols
        rejected: list[Rejection] = []
        lines = np.arange(chunk.first_line, chunk.first_line + len(chunk.starts))
        for i in np.flatnonzero(~ok).tolist():
            raw = chunk.raw(int(lines[i]))
            reason = "empty line" if not raw.strip() else f"expected {self.ncols} fields, found {found[i]}"
            rejected.append(self.rv.row(Record(int(lines[i]), None, raw, ("-", reason))))
        keep = np.flatnonzero(ok)
        if len(keep) == 0:
            return [], rejected
        if len(keep) == len(ok):
            data = chunk.data
        else:   # rare: leave the broken lines out
            data = b"\n".join(chunk.data[s:e] for s, e in zip(chunk.starts[keep].tolist(),
                                                              chunk.ends[keep].tolist(), strict=True)) + b"\n"
        table = self._parse(data)
        if table is None:       # something pyarrow will not parse: the general path decides
            return self._general(chunk, lines[keep], rejected)
        payloads, more = self._columns(table, lines[keep], chunk)
        rejected.extend(more)
        rejected.sort(key=lambda r: r.line)
        return payloads, rejected

    def _parse(self, data: bytes) -> pa.Table | None:
        def read(types: dict[str, pa.DataType]) -> pa.Table:
            return pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(column_names=self.fields, block_size=max(len(data) + 1, 1 << 20)),
                parse_options=pacsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False,
                                                 newlines_in_values=False, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
                    true_values=["true", "t", "1", "yes", "y", "True", "TRUE", "T", "Yes", "YES", "Y"],
                    false_values=["false", "f", "0", "no", "n", "False", "FALSE", "F", "No", "NO", "N"]),
            )
        try:
            return read(self.types)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        if self.rv.assume_utc:    # naive timestamps, read as UTC
            naive = {k: (pa.timestamp("us") if pa.types.is_timestamp(v) else v) for k, v in self.types.items()}
            try:
                return read(naive)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
        return None

    def _general(self, chunk: Chunk, lines: np.ndarray, rejected: list[Rejection]):
        raws = [chunk.raw(int(x)) for x in lines]
        good, bad, good_lines, good_raws = self.fallback.validate_located(
            lines.tolist(), [r.split(",") for r in raws], raws)
        rejected.extend(bad)
        rejected.sort(key=lambda r: r.line)
        return ([Rows(good, good_lines, good_raws)] if good else []), rejected

    # ------------------------------------------------------------ columns
    def _columns(self, table: pa.Table, lines: np.ndarray, chunk: Chunk):
        n = table.num_rows
        bad = np.zeros(n, dtype=bool)
        fields: list[Field] = [self._entity(table, bad)]
        if self.rv.target.table == "metric_samples":
            fields.append(self._metric_type(table, bad))
        for name, parse, check, required in self.rv._data:
            col = table.column(name)
            t = col_type(self.cols[name].type)
            if t.kind in ("int", "float", "ts", "bool"):
                values, nulls = arrownp.values(col)
            else:
                nulls = arrownp.null_mask(col)
            if required:
                bad |= nulls
            if t.kind in ("int", "float"):
                if t.kind == "float":
                    bad |= ~np.isfinite(values)
                if t.lo is not None:
                    bad |= (values < t.lo) | (values > t.hi)
                if check is not None:       # the catalog's bounds (a load's upper one too)
                    lo, hi = self.rv.bounds[name]
                    if lo is not None:
                        bad |= values < lo
                    if hi is not None:
                        bad |= values > hi
                fields.append(Field(t.wire, values, nulls if nulls.any() else None))
            elif t.kind == "ts":
                us = values - PG_EPOCH_US
                fields.append(Field(t.wire, us, nulls if nulls.any() else None))
            elif t.kind == "bool":
                fields.append(Field(t.wire, values.astype(np.uint8), nulls if nulls.any() else None))
            else:   # jsonb / text: checked value by value
                texts = col.to_pylist()
                encoded: list[bytes] = [b""] * n
                for i, v in enumerate(texts):
                    if v is None:
                        continue
                    try:
                        parsed = parse(v)
                    except BadValue:
                        bad[i] = True
                        continue
                    encoded[i] = (jsonb(json.dumps(parsed.obj, ensure_ascii=False)) if t.kind == "json"
                                  else str(parsed).encode("utf-8"))
                fields.append(Field(None, encoded, nulls if nulls.any() else None))
        rejected: list[Rejection] = []
        extra: list[tuple] = []
        extra_lines: list[int] = []
        extra_raws: list[str] = []
        bad_idx = np.flatnonzero(bad)
        for i in bad_idx.tolist():
            line = int(lines[i])
            raw = chunk.raw(line)
            res = self.rv.row(Record(line, dict(zip(self.fields, raw.split(","), strict=True)), raw))
            if isinstance(res, Rejection):
                rejected.append(res)
            else:   # a vectorised check was stricter than the row rules: keep the row
                extra.append(res)
                extra_lines.append(line)
                extra_raws.append(raw)
        payloads: list[Columns | Rows] = []
        if len(bad_idx):
            good = np.flatnonzero(~bad)
            fields = [Field(f.wire, (f.values[good] if f.wire is not None else [f.values[i] for i in good]),
                            None if f.nulls is None else f.nulls[good]) for f in fields]
            lines = lines[good]
        if len(lines):
            payloads.append(Columns(fields, lines, chunk.raw))
        if extra:
            payloads.append(Rows(extra, extra_lines, extra_raws))
        return payloads, rejected

    def _lookup(self, keys: pa.ChunkedArray | pa.Array, value_set: pa.Array, ids: np.ndarray) -> np.ndarray:
        """Ids of ``keys`` in ``value_set`` (-1: unknown or ambiguous)."""
        import pyarrow.compute as pc

        idx, missing = arrownp.values(pc.index_in(keys, value_set=value_set), fill=-1)
        out = np.full(len(idx), -1, dtype=np.int64)
        hit = ~missing
        out[hit] = ids[idx[hit]]
        return out

    def _entity(self, table: pa.Table, bad: np.ndarray) -> Field:
        id_col = f"{self.kind}_id"
        if id_col in self.fields:
            ids, nulls = arrownp.values(table.column(id_col), fill=-1)
            bad |= nulls | ~np.isin(ids, self.known_ids)
        else:
            names = table.column(self.kind) if self.kind in self.fields else pa.nulls(table.num_rows, pa.string())
            if "organization" in self.fields:
                import pyarrow.compute as pc  # 0.1 s of imports: only files that name their servers pay it

                keys = pc.binary_join_element_wise(table.column("organization").cast(pa.string()), names, "\x1f")
                ids = self._lookup(keys, *self._names["org"])
                # no organization given on a row: look the name up alone
                no_org = arrownp.null_mask(table.column("organization"))
                if no_org.any():
                    alone = self._lookup(names, *self._names["name"])
                    ids = np.where(no_org, alone, ids)
            else:
                ids = self._lookup(names, *self._names["name"])
            bad |= ids < 0
        return Field(">i8", ids)

    def _metric_type(self, table: pa.Table, bad: np.ndarray) -> Field:
        if "metric_type_id" in self.fields:
            ids, nulls = arrownp.values(table.column("metric_type_id"), fill=-1)
            bad |= nulls | ~np.isin(ids, self.known_metric_ids)
        else:
            names = table.column("metric_type") if "metric_type" in self.fields \
                else pa.nulls(table.num_rows, pa.string())
            ids = self._lookup(names, *self._names["metric"])
            bad |= ids < 0
        return Field(">i8", ids)
