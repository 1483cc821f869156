"""``rmp ingest --jobs N``: several files, or ranges of one large plain CSV, loaded
by N worker processes at once.

A plain CSV (``fastcsv.fast_eligible``: one line per record) is cut into N
byte ranges at line starts, each loaded by a worker with its own connection
and its own batch transactions; line numbers stay those of the whole file.
Every other file is one unit. Guarantees are those of one load: each batch
commits its rows and its rejections together (``metrics.rejected_rows``),
reloads add nothing; the quarantine file of a split CSV is written once by
the parent from its parts' rejections, in line order.

Processes, not threads: validation and encoding are Python/numpy work that
holds the GIL. The embedded engine runs one statement at a time for all
clients, so there the units run one after the other (``serialized``).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ingest.errors import IngestFileError
from ingest.fastcsv import fast_eligible, split_ranges
from ingest.loader import ByteRange, LoadResult, load_file
from ingest.quarantine import QuarantineFile
from rmp import db


@dataclass(frozen=True)
class Unit:
    index: int
    path: Path
    byte_range: ByteRange | None
    total: int          # bytes in this unit (progress)


def serialized(url: str) -> bool:
    """True on the embedded engine (PGlite: one session for every client)."""
    return db.is_embedded(url)


def plan(paths: Iterable[Path], jobs: int, fmt: str | None) -> list[Unit]:
    """Units of work: a plain CSV big enough is split in ``jobs`` ranges, other files stay whole."""
    units: list[Unit] = []
    for path in paths:
        ranges: list[ByteRange] = []
        plain = (jobs > 1 and fmt in (None, "csv") and path.suffix.lower() == ".csv" and path.is_file()
                 and path.stat().st_size > 0)
        if plain and fast_eligible(path):
            ranges = split_ranges(path, jobs)
        if len(ranges) > 1:
            units += [Unit(len(units) + k, path, r, r[1] - r[0]) for k, r in enumerate(ranges)]
        else:
            size = path.stat().st_size if path.is_file() else 0
            units.append(Unit(len(units), path, None, size))
    return units


_progress = None   # the worker's end of the progress queue (set by _init, inherited from the parent)


def _init(progress) -> None:
    global _progress
    _progress = progress


def _run(unit: Unit, url: str, options: dict) -> LoadResult | str:
    """One unit in a worker: its result, or the one-line error that stopped it."""
    def on_batch(b) -> None:
        _progress.put((unit.index, b.rows, b.position - (unit.byte_range[0] if unit.byte_range else 0)))

    try:
        return load_file(unit.path, url, on_batch=on_batch, byte_range=unit.byte_range, **options)
    except IngestFileError as exc:
        return str(exc)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{unit.path}: database error: {first}"


@dataclass
class FileOutcome:
    path: Path
    result: LoadResult | None
    error: str | None


def load_parallel(paths: list[Path], url: str, jobs: int, options: dict,
                  on_progress: Callable[[int, int, int], None] | None = None,
                  units: list[Unit] | None = None) -> list[FileOutcome]:
    """Load ``paths`` with ``jobs`` worker processes; one outcome per file, in order.

    ``on_progress(unit index, rows so far in that unit, bytes so far in that unit)``."""
    units = units if units is not None else plan(paths, jobs, options.get("fmt"))
    # fork: a worker starts in milliseconds with the modules already imported (spawn would
    # re-import numpy/pyarrow/psycopg in each); the parent holds no connection at this point
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    progress = ctx.Queue()
    results: dict[int, LoadResult | str] = {}
    rows: dict[int, int] = {}
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init,
                                 initargs=(progress,)) as pool:
            futures = {pool.submit(_run, u, url, options): u for u in units}
            pending = set(futures)
            while pending:
                try:
                    index, n, position = progress.get(timeout=0.2)
                    rows[index] = rows.get(index, 0) + n
                    if on_progress is not None:
                        on_progress(index, rows[index], position)
                except queue.Empty:
                    pass
                for f in [f for f in pending if f.done()]:
                    pending.discard(f)
                    results[futures[f].index] = f.result()
            for f in as_completed(futures):
                results[futures[f].index] = f.result()
    finally:
        progress.close()
    return _merge(paths, units, results)


def _merge(paths: list[Path], units: list[Unit], results: dict[int, LoadResult | str]) -> list[FileOutcome]:
    out: list[FileOutcome] = []
    for path in paths:
        mine = [u for u in units if u.path == path]
        errors = [results[u.index] for u in mine if isinstance(results[u.index], str)]
        parts = [results[u.index] for u in mine if isinstance(results[u.index], LoadResult)]
        if not parts:
            out.append(FileOutcome(path, None, errors[0] if errors else f"{path}: not loaded"))
            continue
        merged = LoadResult(path=str(path), table=parts[0].table)
        for r in parts:
            merged.rows += r.rows
            merged.loaded += r.loaded
            merged.duplicates += r.duplicates
            merged.rejected += r.rejected
            merged.batches += r.batches
            merged.seconds = max(merged.seconds, r.seconds)
        if len(mine) > 1:     # a split CSV: one quarantine file from all parts, in line order
            rejections = sorted((x for r in parts for x in r.rejections), key=lambda x: x.line)
            quarantine = QuarantineFile(path)
            quarantine.write(rejections)
            quarantine.close()
            merged.quarantine = quarantine.written
            merged.rejections = rejections[:100]
        else:
            merged.quarantine, merged.rejections = parts[0].quarantine, parts[0].rejections
        out.append(FileOutcome(path, merged, errors[0] if errors else None))
    return out
