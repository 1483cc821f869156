"""Streaming readers for CSV, NDJSON and Parquet.

Each reader yields ``Record``s one at a time (Parquet in bounded row groups),
so memory stays flat however large the file. A record that cannot even be
split into fields (wrong column count, empty line, bad JSON) still comes out,
carrying its structural error, so the validator can quarantine it.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import IngestFileError

FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
           ".parquet": "parquet", ".pq": "parquet"}

PARQUET_BATCH_ROWS = 10_000


@dataclass(slots=True)
class Record:
    line: int                          # 1-based line (Parquet: row number + 1 for the header-less count)
    values: dict[str, Any] | None      # field -> raw value (str for CSV, JSON types, Arrow -> Python)
    raw: str                           # the line as read, for the quarantine
    error: tuple[str, str] | None = None  # (field, reason) when the record is structurally broken


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("csv", "ndjson", "parquet"):
            raise IngestFileError(path, f"unknown format {fmt!r} (expected csv, ndjson or parquet)")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = FORMATS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise IngestFileError(path, f"unknown format {''.join(path.suffixes) or '(no extension)'!r} "
                              "(expected .csv, .ndjson/.jsonl or .parquet, optionally .gz; or pass --format)")
    return found


@dataclass(slots=True)
class RowBatch:
    """A batch of CSV rows split into fields, for column-wise validation."""

    lines: list[int]           # line number of each row
    rows: list[list[str]]      # each exactly as many fields as the header
    raws: list[str]
    broken: list[Record]       # empty lines, wrong field counts, CSV errors
    position: int


class Source:
    """An opened input file: its header columns, its records, and how far the reading got."""

    path: Path
    format: str
    columns: list[str]
    total: int | None      # progress total in ``unit``
    unit: str              # "bytes" or "rows"

    def records(self) -> Iterator[Record]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def position(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_text(path: Path) -> io.TextIOBase:
    try:
        if path.suffix.lower() == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace", newline="")
        return open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115 - closed by Source
    except IsADirectoryError:
        raise IngestFileError(path, "is a directory, not a file") from None
    except FileNotFoundError:
        raise IngestFileError(path, "no such file") from None
    except OSError as exc:
        raise IngestFileError(path, f"cannot read: {exc.strerror or exc}") from None


def _total_bytes(path: Path) -> int | None:
    return None if path.suffix.lower() == ".gz" else path.stat().st_size


class _LineTap:
    """Iterates a text file line by line, remembering the lines since the last take(),
    so each CSV record keeps its exact raw text and its starting line number."""

    def __init__(self, fh: io.TextIOBase, path: Path):
        self.fh, self.path = fh, path
        self.pending: list[str] = []
        self.consumed = 0    # characters read (≈ bytes for the progress bar)
        self.line = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        try:
            text = next(self.fh)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise IngestFileError(self.path, f"read failed at line {self.line + 1}: {exc}") from None
        self.pending.append(text)
        self.consumed += len(text)
        self.line += 1
        return text

    def take(self) -> str:
        raw = "".join(self.pending)
        self.pending.clear()
        return raw.rstrip("\r\n")


class _TextSource(Source):
    """A line-oriented text file (CSV, NDJSON; gzip by suffix): progress in bytes read."""

    unit = "bytes"

    def __init__(self, path: Path):
        self.path = path
        self.total = _total_bytes(path)
        self.fh = _open_text(path)
        self.tap = _LineTap(self.fh, path)

    @property
    def position(self) -> int:
        return self.tap.consumed

    def close(self) -> None:
        self.fh.close()


class CsvSource(_TextSource):
    format = "csv"

    def __init__(self, path: Path):
        super().__init__(path)
        self.reader = csv.reader(self.tap, strict=False)
        try:
            header = next(self.reader, None)
        except csv.Error as exc:
            self.close()
            raise IngestFileError(path, f"line 1: unreadable CSV header: {exc}") from None
        self.tap.take()
        if header is None:
            self.close()
            raise IngestFileError(path, "empty file (no header line)")
        self.columns = [h.strip().lstrip("\ufeff").strip() for h in header]
        if not any(self.columns):
            self.close()
            raise IngestFileError(path, "line 1: empty header")
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            self.close()
            raise IngestFileError(path, f"line 1: duplicate column(s) {', '.join(dupes)}")

    def row_batches(self, batch_rows: int) -> Iterator[RowBatch]:
        """Rows in batches of ``batch_rows`` lines. Lines without a quote are split on
        commas directly (one line, one record); a chunk with quotes goes through the
        csv module, which may read on past the chunk to finish a quoted field."""
        ncols = len(self.columns)
        tap = self.tap
        while True:
            try:
                chunk = list(itertools.islice(self.fh, batch_rows))
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise IngestFileError(self.path, f"read failed after line {tap.line}: {exc}") from None
            if not chunk:
                return
            lines: list[int] = []
            rows: list[list[str]] = []
            raws: list[str] = []
            broken: list[Record] = []
            if any('"' in text for text in chunk):
                end = tap.line + len(chunk)
                tap.fh = itertools.chain(chunk, self.fh)
                for rec in self._records(stop_after_line=end):
                    if rec.values is None:
                        broken.append(rec)
                    else:
                        lines.append(rec.line)
                        rows.append(list(rec.values.values()))
                        raws.append(rec.raw)
                tap.fh = self.fh
            else:
                line = tap.line
                for text in chunk:
                    line += 1
                    raw = text.rstrip("\r\n")
                    fields = raw.split(",")
                    if len(fields) == ncols:
                        lines.append(line)
                        rows.append(fields)
                        raws.append(raw)
                    elif not raw.strip():
                        broken.append(Record(line, None, raw, ("-", "empty line")))
                    else:
                        broken.append(Record(line, None, raw, ("-", f"expected {ncols} fields, found {len(fields)}")))
                tap.line = line
                tap.consumed += sum(map(len, chunk))
            yield RowBatch(lines, rows, raws, broken, tap.consumed)

    def records(self) -> Iterator[Record]:
        return self._records()

    def _records(self, stop_after_line: int | None = None) -> Iterator[Record]:
        ncols = len(self.columns)
        columns = self.columns
        tap = self.tap
        while stop_after_line is None or tap.line < stop_after_line:
            start = tap.line + 1
            try:
                row = next(self.reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(start, None, tap.take(), ("-", f"malformed CSV: {exc}"))
                continue
            raw = tap.take()
            if not row or (len(row) == 1 and not row[0].strip() and ncols > 1):
                yield Record(start, None, raw, ("-", "empty line"))
            elif len(row) != ncols:
                yield Record(start, None, raw, ("-", f"expected {ncols} fields, found {len(row)}"))
            else:
                yield Record(start, dict(zip(columns, row, strict=True)), raw)


class NdjsonSource(_TextSource):
    """One JSON object per line. The first object's keys play the header's part
    (target detection); later objects may omit or add known fields."""

    format = "ndjson"

    def __init__(self, path: Path):
        super().__init__(path)
        self._first: list[Record] = []
        self.columns = []
        for text in self.tap:
            rec = self._parse(self.tap.line, text)
            self._first.append(rec)
            if rec.values is not None:
                self.columns = list(rec.values)
                break
        if not self._first:
            self.close()
            raise IngestFileError(path, "empty file")
        if not self.columns:
            self.close()
            raise IngestFileError(path, "no JSON object found in the file")

    @staticmethod
    def _parse(line: int, text: str) -> Record:
        raw = text.rstrip("\r\n")
        if not raw.strip():
            return Record(line, None, raw, ("-", "empty line"))
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            return Record(line, None, raw, ("-", f"invalid JSON: {exc.msg} at column {exc.colno}"))
        if not isinstance(obj, dict):
            return Record(line, None, raw, ("-", f"expected a JSON object, found {type(obj).__name__}"))
        return Record(line, obj, raw)

    def records(self) -> Iterator[Record]:
        yield from self._first
        self._first = []
        for text in self.tap:
            yield self._parse(self.tap.line, text)


class ParquetSource(Source):
    format = "parquet"
    unit = "rows"

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except FileNotFoundError:
            raise IngestFileError(path, "no such file") from None
        except IsADirectoryError:
            raise IngestFileError(path, "is a directory, not a file") from None
        except (OSError, pa.ArrowException) as exc:
            first = (str(exc).strip().splitlines() or ["?"])[0]
            raise IngestFileError(path, f"not a readable Parquet file: {first}") from None
        self.columns = list(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows
        if not self.columns:
            raise IngestFileError(path, "Parquet file has no columns")
        if self.total == 0:
            raise IngestFileError(path, "empty file (0 rows)")
        self._done = 0

    @property
    def position(self) -> int:
        return self._done

    def records(self) -> Iterator[Record]:
        row = 0
        for batch in self.file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for values in batch.to_pylist():
                row += 1
                yield Record(row, values, "")
                self._done = row

    def close(self) -> None:
        self.file.close()


def open_source(path: str | Path, fmt: str | None = None) -> Source:
    """Open ``path`` for streaming; one-line ``IngestFileError`` if it cannot be."""
    p = Path(path)
    kind = detect_format(p, fmt)
    if not p.exists():
        raise IngestFileError(p, "no such file")
    if p.is_dir():
        raise IngestFileError(p, "is a directory, not a file")
    if p.stat().st_size == 0:
        raise IngestFileError(p, "empty file")
    return {"csv": CsvSource, "ndjson": NdjsonSource, "parquet": ParquetSource}[kind](p)


def raw_text(record: Record) -> str:
    """The record as text for the quarantine: the line itself, or JSON for Parquet rows."""
    if record.raw or record.values is None:
        return record.raw
    return json.dumps(record.values, default=str, separators=(",", ":"))
