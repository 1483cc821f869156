"""Bulk load: COPY (binary) into a per-batch staging table, then
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the hypertable.

One transaction per batch holds the COPY, the move into the hypertable and
the batch's rejected rows, so a load killed at any point leaves only whole
batches behind, and re-running it completes the load without duplicates
(the conflict clause skips the rows already there).

The staging table is ``TEMP ... ON COMMIT DROP``: it lives inside the batch
transaction only, which is also what the embedded engine's shared session
requires. Reading and validating the next batch runs in a thread while the
database works on the current one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from ingest import compact
from ingest.coltypes import col_type
from ingest.errors import IngestSetupError
from ingest.fastcsv import FastCsvValidator, data_start, fast_eligible, read_chunks
from ingest.formats import CsvSource, Source, open_source
from ingest.frames import Frame
from ingest.payload import Columns, Rows
from ingest.quarantine import QuarantineFile, record_rejections
from ingest.targets import Column, Target, compact_target, detect_target, get_target, table_columns
from ingest.validate import ColumnValidator, Rejection, Resolver, RowValidator
from rmp import db

Payload = Rows | Columns | Frame | compact.Samples
ByteRange = tuple[int, int, int]   # start byte, end byte, number of the first line
# Errors a row's content can cause in the database (a value the checks let
# through, a server deleted meanwhile): the batch is split to find the row.
# Client-side dump errors (a value psycopg cannot pack) count too.
ROW_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError, psycopg.DataError, OverflowError)

DEFAULT_BATCH_ROWS = 10_000
STAGING = "rmp_ingest_stage"


@dataclass
class BatchResult:
    rows: int          # records read in this batch (good + rejected)
    loaded: int
    duplicates: int
    rejected: int
    position: int      # progress position of the source after this batch


@dataclass
class LoadResult:
    path: str
    table: str
    rows: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    batches: int = 0
    seconds: float = 0.0
    quarantine: Path | None = None
    rejections: list[Rejection] = field(default_factory=list, repr=False)  # first 100, for messages

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class BatchWriter:
    """Writes batches of valid rows into one hypertable, inside the caller's transaction.

    Optimistic path: COPY straight into the hypertable under a savepoint. Only
    when that hits a unique (re-sent rows) or NOT NULL (column left to its
    default) violation does the batch take the staging path: COPY into a
    temp table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Fresh
    data thus pays for one COPY; re-loads stay exact. After a fallback the
    staging path is used until a batch turns out to hold no duplicates.

    If the database refuses a batch for a row's content (``ROW_ERRORS``), the
    batch is split in halves under savepoints until the offending rows are
    alone; they land in ``found`` as rejections (line, column, the database's
    reason) and every other row is written.
    """

    def __init__(self, conn: psycopg.Connection, target: Target, columns: Sequence[Column]):
        self.conn, self.target, self.columns = conn, target, list(columns)
        self.given = [c.name for c in columns]     # the input's columns, in payload order
        # revision 0012 on, server_metrics is a view over the compact hypertable server_samples:
        # rows are encoded (ingest.compact) and written to the table (COPY into the view would
        # go through a row trigger); the same key, conflict clause and savepoints
        self.compact = compact_target(conn, target)
        if self.compact is not None:
            target = self.compact
            by_name = {c.name: c for c in table_columns(conn, target)}
            columns = [by_name[name] for name in compact.physical_columns(self.given)]
            self.wires = [col_type(c.type).wire for c in columns]
        self.physical = list(columns)
        _require_unique_index(conn, target)
        self.oids = [c.oid for c in columns]
        col_list = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
        table = sql.SQL("{}.{}").format(sql.Identifier("metrics"), sql.Identifier(target.table))
        self.copy_direct = sql.SQL("copy {} ({}) from stdin (format binary)").format(table, col_list)
        # types come from the catalog (format_type), never from the input
        self.create_staging = sql.SQL("create temp table {} ({}) on commit drop").format(
            sql.Identifier(STAGING),
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in columns),
        )
        self.copy_staging = sql.SQL("copy {} ({}) from stdin (format binary)").format(
            sql.Identifier(STAGING), col_list)
        # a NULL staged for a NOT NULL column with a default means "not given": take the default
        select_list = sql.SQL(", ").join(
            sql.SQL("coalesce({}, {})").format(sql.Identifier(c.name), sql.SQL(c.default))
            if c.not_null and c.default not in (None, "identity") else sql.Identifier(c.name)
            for c in columns
        )
        self.move = sql.SQL("insert into {} ({}) select {} from {} on conflict ({}) do nothing").format(
            table, col_list, select_list, sql.Identifier(STAGING),
            sql.SQL(", ").join(map(sql.Identifier, target.conflict)),
        )
        self.drop_staging = sql.SQL("drop table {}").format(sql.Identifier(STAGING))
        self.optimistic = True
        self.direct_batches = self.staged_batches = 0
        self.found: list[Rejection] = []     # rows the database refused, found by bisection
        self._constraint_columns: dict[str, str] | None = None

    def _copy(self, statement: sql.Composed, payload: Payload) -> None:
        if isinstance(payload, compact.Samples):
            payload.encoded()     # before the COPY starts: a value that cannot be encoded is a row error
        with self.conn.cursor().copy(statement) as copy:
            payload.write(copy, self.oids)

    def prepare(self, payload: Payload) -> Payload:
        """The payload as this writer COPYs it: encoded for server_samples when the rows live
        there. Called in the reader thread too (``_validated_batches``), ahead of the database."""
        if self.compact is not None and not isinstance(payload, compact.Samples):
            payload = compact.Samples(payload, self.given, [c.name for c in self.physical], self.wires)
        elif isinstance(payload, Frame) and payload.wires is None:
            payload.wires = [col_type(c.type).wire for c in self.physical]
        return payload

    def write(self, payload: Payload | Sequence[tuple]) -> int:
        """Rows inserted; the rest were already present (duplicates) or are in ``found``."""
        if not isinstance(payload, Rows | Columns | Frame | compact.Samples):
            payload = Rows(list(payload))
        payload = self.prepare(payload)
        if not len(payload):
            return 0
        if self.optimistic:
            try:
                with self.conn.transaction():          # savepoint
                    self._copy(self.copy_direct, payload)
                self.direct_batches += 1
                return len(payload)
            except (psycopg.errors.UniqueViolation, psycopg.errors.NotNullViolation):
                pass
            except ROW_ERRORS:
                if not payload.locatable:
                    raise
        inserted = self._staged_or_split(payload)
        self.staged_batches += 1
        self.optimistic = inserted == len(payload)
        return inserted

    def _staged(self, payload: Payload) -> int:
        self.conn.execute(self.create_staging)
        self._copy(self.copy_staging, payload)
        inserted = self.conn.execute(self.move).rowcount
        self.conn.execute(self.drop_staging)
        return inserted

    def _staged_or_split(self, payload: Payload) -> int:
        if not payload.locatable:
            return self._staged(payload)
        try:
            with self.conn.transaction():
                return self._staged(payload)
        except ROW_ERRORS as exc:
            if len(payload) == 1:
                self.found.append(self._rejection(payload, exc))
                return 0
        half = len(payload) // 2
        return self._staged_or_split(payload.take(0, half)) + self._staged_or_split(payload.take(half, len(payload)))

    def _rejection(self, payload: Payload, exc: Exception) -> Rejection:
        diag = getattr(exc, "diag", None)
        field = "-"
        if diag is not None:
            if diag.column_name:
                field = compact.source_column(diag.column_name) if self.compact else diag.column_name
            elif diag.constraint_name:
                field = self._constraint_column(diag.constraint_name) or "-"
            if field == "-" and diag.context:   # "COPY rmp_ingest_stage, line 1, column cpu_cores: ..."
                for c in sorted(self.physical, key=lambda c: -len(c.name)):   # load_15m_x100 before load_1m
                    if f"column {c.name}" in diag.context:
                        field = compact.source_column(c.name) if self.compact else c.name
                        break
            reason = diag.message_primary or str(exc)
        elif isinstance(exc, compact.EncodeError):
            field, reason = exc.column, exc.reason
        else:
            reason = str(exc)
        reason = (reason.strip().splitlines() or [type(exc).__name__])[0]
        return Rejection(payload.line(0), field, f"refused by the database: {reason}", payload.raw(0))

    def _constraint_column(self, name: str) -> str | None:
        if self._constraint_columns is None:
            table = (self.compact or self.target).qualified
            rows = self.conn.execute(
                """
                select c.conname, a.attname from pg_constraint c
                join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
                where c.conrelid = to_regclass(%s)
                """, (table,)).fetchall()
            if self.compact:
                # server_samples' checks are named for the column of server_metrics they guard
                # (a derived column's reads several): the catalog says which, the first column
                # of any other constraint is mapped back to the column it holds
                self._constraint_columns = {**{con: compact.source_column(att) for con, att in rows},
                                            **compact.constraint_columns()}
            else:
                self._constraint_columns = dict(rows)
        return self._constraint_columns.get(name)


def _require_unique_index(conn: psycopg.Connection, target: Target) -> None:
    """The conflict key must be backed by a unique index, or re-loads would duplicate."""
    found = conn.execute(
        """
        select 1 from pg_index i
        where i.indrelid = to_regclass(%s) and i.indisunique
          and (select array_agg(a.attname::text order by a.attname)
               from pg_attribute a where a.attrelid = i.indrelid and a.attnum = any(i.indkey))
              = (select array_agg(c order by c) from unnest(%s::text[]) c)
        """,
        (target.qualified, list(target.conflict)),
    ).fetchone()
    if not found:
        raise IngestSetupError(f"{target.qualified} has no unique index on ({', '.join(target.conflict)}); "
                               "run the migrations (alembic upgrade head)")


def _trusted_writer(conn: psycopg.Connection, table: str, columns: Sequence[str]) -> BatchWriter:
    target = get_target(table)
    by_name = {c.name: c for c in table_columns(conn, target)}
    missing = [c for c in columns if c not in by_name]
    if missing:
        raise ValueError(f"{target.qualified} has no column(s) {missing}")
    return BatchWriter(conn, target, [by_name[c] for c in columns])


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]
    if any(np.ma.isMaskedArray(a) for a in arrays):
        return np.ma.concatenate(arrays)
    return np.concatenate(arrays)


def load_columns(conn: psycopg.Connection, table: str, columns: Sequence[str],
                 parts: Iterable[Mapping[str, np.ndarray]], *, batch_rows: int = DEFAULT_BATCH_ROWS,
                 on_batch: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Load already-valid rows given by column (the fleet writer): each part maps every name
    of ``columns`` to an array (timestamps as UTC datetime64; ``frames.frame_columns``).
    Parts are joined into batches of about ``batch_rows`` rows, each its own transaction.
    Returns (inserted, duplicates); ``conn`` must be in autocommit mode."""
    writer = _trusted_writer(conn, table, columns)
    inserted = dupes = 0
    pending: list[Mapping[str, np.ndarray]] = []
    size = 0

    def flush() -> None:
        nonlocal inserted, dupes, pending, size
        frame = Frame({c: _join([p[c] for p in pending]) for c in columns})
        with conn.transaction():
            n = writer.write(frame)
        inserted += n
        dupes += len(frame) - n
        if on_batch is not None:
            on_batch(len(frame), n)
        pending, size = [], 0

    for part in parts:
        pending.append(part)
        size += len(part[columns[0]])
        if size >= batch_rows:
            flush()
    if pending:
        flush()
    return inserted, dupes


def load_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[tuple],
              *, batch_rows: int = DEFAULT_BATCH_ROWS,
              on_batch: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Load already-valid rows (generator, collector): returns (inserted, duplicates).

    ``conn`` must be in autocommit mode; each batch is its own transaction."""
    writer = _trusted_writer(conn, table, columns)
    inserted = dupes = 0
    batch: list[tuple] = []

    def flush() -> None:
        nonlocal inserted, dupes, batch
        with conn.transaction():
            n = writer.write(Rows(batch))
        inserted += n
        dupes += len(batch) - n
        if on_batch is not None:
            on_batch(len(batch), n)
        batch = []

    for row in rows:
        batch.append(row)
        if len(batch) >= batch_rows:
            flush()
    if batch:
        flush()
    return inserted, dupes


@dataclass
class _Batch:
    good: list[Payload]
    rejected: list[Rejection]
    position: int

    @property
    def good_rows(self) -> int:
        return sum(map(len, self.good))


_DONE = object()


def _ahead(payloads: list[Payload], prepare: Callable[[Payload], Payload]) -> list[Payload]:
    """Payloads in the shape the writer COPYs, binary-encoded here, in the reader thread, while
    the database works; one that cannot be encoded is left for the writer to bisect."""
    out = [prepare(p) for p in payloads]
    for p in out:
        if isinstance(p, Columns | compact.Samples):
            with contextlib.suppress(compact.EncodeError):
                p.encoded()
    return out


def _validated_batches(source: Source, validator: RowValidator, batch_rows: int,
                       stop: threading.Event, byte_range: ByteRange | None = None,
                       prepare: Callable[[Payload], Payload] = lambda p: p) -> Iterator[_Batch]:
    # scaling events are few and have two optional references: the row-wise path
    rowwise = validator.target.table == "scaling_events"
    if byte_range is not None or (isinstance(source, CsvSource) and len(source.columns) > 1 and not rowwise
                                  and fast_eligible(source.path)):
        fast = FastCsvValidator(validator, source.columns)
        start, end, first_line = byte_range or (data_start(source.path), source.path.stat().st_size, 2)
        for chunk in read_chunks(source.path, start, end, first_line, batch_rows):
            if stop.is_set():
                return
            good, bad = fast.validate(chunk)
            yield _Batch(_ahead(good, prepare), bad, chunk.position)
        return
    if isinstance(source, CsvSource) and not rowwise:
        columns = ColumnValidator(validator, source.columns)
        for rb in source.row_batches(batch_rows):
            if stop.is_set():
                return
            good, bad, lines, raws = columns.validate_located(rb.lines, rb.rows, rb.raws)
            bad.extend(validator.row(rec) for rec in rb.broken)
            bad.sort(key=lambda r: r.line)
            yield _Batch(_ahead([Rows(good, lines, raws)], prepare), bad, rb.position)
        return
    good: list[tuple] = []
    lines: list[int] = []
    records: list = []
    bad: list[Rejection] = []
    row = validator.row
    for record in source.records():
        if stop.is_set():
            return
        out = row(record)
        if isinstance(out, Rejection):
            bad.append(out)
        else:
            good.append(out)
            lines.append(record.line)
            records.append(record)
        if len(good) + len(bad) >= batch_rows:
            yield _Batch(_ahead([Rows(good, lines, records)], prepare), bad, source.position)
            good, lines, records, bad = [], [], [], []
    if good or bad:
        yield _Batch(_ahead([Rows(good, lines, records)], prepare), bad, source.position)


def _prefetch(batches: Iterator[_Batch], stop: threading.Event, depth: int = 2) -> Iterator[_Batch]:
    """Run the reader/validator one or two batches ahead in a thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer and re-raised there
            q.put(exc)

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def load_file(path: str | Path, url: str | None = None, *, table: str | None = None,
              fmt: str | None = None, assume_utc: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
              on_start: Callable[[Source, Target], None] | None = None,
              on_batch: Callable[[BatchResult], None] | None = None,
              byte_range: ByteRange | None = None) -> LoadResult:
    """Load one file into its hypertable; rejected rows go to the quarantine.

    ``byte_range`` (start byte, end byte, first line number; from
    ``fastcsv.split_ranges``) loads only that part of a plain CSV: one worker
    of ``rmp ingest --jobs``. Such a part writes no quarantine file and keeps
    every rejection in the result, for the caller to write the file once.

    Raises ``IngestFileError`` (one line, names the file) when the file as a
    whole cannot be loaded; individual bad rows never raise."""
    started = time.perf_counter()
    source = open_source(path, fmt)
    if byte_range is not None and not isinstance(source, CsvSource):
        source.close()
        raise ValueError("byte ranges are for CSV files only")
    stop = threading.Event()
    quarantine: QuarantineFile | None = None
    try:
        target = get_target(table) if table else detect_target(source.columns, source.path)
        source_file = str(Path(path).resolve())
        result = LoadResult(path=str(path), table=target.qualified)
        with db.connect(url, autocommit=True) as conn:
            validator = RowValidator(
                target, table_columns(conn, target), source.columns, Resolver(conn, target),
                assume_utc=assume_utc, path=source.path, all_optional_fields=source.format == "ndjson",
            )
            if on_start is not None:
                on_start(source, target)
            writer = BatchWriter(conn, target, validator.columns)
            quarantine = QuarantineFile(path) if byte_range is None else None
            keep = 100 if byte_range is None else None
            batches = _validated_batches(source, validator, batch_rows, stop, byte_range, writer.prepare)
            for batch in _prefetch(batches, stop):
                with conn.transaction():
                    inserted = sum(writer.write(p) for p in batch.good)
                    refused, writer.found = writer.found, []
                    if refused:
                        batch.rejected = sorted(batch.rejected + refused, key=lambda r: r.line)
                    record_rejections(conn, source_file, target.qualified, batch.rejected)
                if quarantine is not None:
                    quarantine.write(batch.rejected)
                good = batch.good_rows - len(refused)
                b = BatchResult(good + len(batch.rejected), inserted,
                                good - inserted, len(batch.rejected), batch.position)
                result.rows += b.rows
                result.loaded += b.loaded
                result.duplicates += b.duplicates
                result.rejected += b.rejected
                result.batches += 1
                if keep is None:
                    result.rejections.extend(batch.rejected)
                elif len(result.rejections) < keep:
                    result.rejections.extend(batch.rejected[: keep - len(result.rejections)])
                if on_batch is not None:
                    on_batch(b)
        result.quarantine = quarantine.written if quarantine is not None else None
    finally:
        stop.set()
        if quarantine is not None:
            quarantine.close()
        source.close()
    result.seconds = time.perf_counter() - started
    return result
