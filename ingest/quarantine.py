"""Where rejected rows go: a CSV next to the input and ``metrics.rejected_rows``.

The quarantine file ``<input>.rejected.csv`` has the columns
``file,line,field,reason,raw`` and describes the latest load of that input
(it is rewritten by each load, removed when a load rejects nothing). The
table keeps every rejection once: re-loading the same file does not repeat
rows already recorded for the same file, line, reason and raw text.

The file is meant to be opened in a spreadsheet, and its cells hold input
the loader refused: a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return (and is more than that one character) is written with a leading apostrophe so a spreadsheet
shows it as text instead of running it as a formula (OWASP "CSV
injection"). The exact text stays in ``metrics.rejected_rows.raw_line``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import psycopg

from ingest.validate import Rejection

QUARANTINE_COLUMNS = ["file", "line", "field", "reason", "raw"]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralize(cell: object) -> object:
    """A text cell a spreadsheet would evaluate, prefixed so it stays text."""
    if isinstance(cell, str) and len(cell) > 1 and cell.startswith(_FORMULA_START):   # a lone "-" is no formula
        return "'" + cell
    return cell


def quarantine_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".rejected.csv")


class QuarantineFile:
    """Opened on the first rejection, so clean loads leave no file behind."""

    def __init__(self, input_path: str | Path):
        self.source = str(input_path)
        self.path = quarantine_path(input_path)
        self.path.unlink(missing_ok=True)   # a stale file from an earlier load would mislead
        self._fh = None
        self._writer = None
        self.count = 0

    def write(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        if self._writer is None:
            self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._writer = csv.writer(self._fh)
            self._writer.writerow(QUARANTINE_COLUMNS)
        self._writer.writerows(tuple(map(neutralize, (self.source, r.line, r.field, r.reason, r.raw)))
                               for r in rejections)
        self._fh.flush()
        self.count += len(rejections)

    @property
    def written(self) -> Path | None:
        return self.path if self.count else None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def record_rejections(conn: psycopg.Connection, source_file: str, table: str,
                      rejections: Sequence[Rejection]) -> int:
    """Insert rejections into metrics.rejected_rows inside the caller's transaction;
    returns how many were new."""
    if not rejections:
        return 0
    conn.execute(
        "create temp table rmp_rejected_stage (line_number bigint, field text, reason text, raw_line text) "
        "on commit drop"
    )
    with conn.cursor().copy(
        "copy rmp_rejected_stage (line_number, field, reason, raw_line) from stdin (format binary)"
    ) as copy:
        copy.set_types(["bigint", "text", "text", "text"])
        for r in rejections:
            # PostgreSQL text cannot hold NUL; keep the rest of the line verbatim
            copy.write_row((r.line, r.field, r.reason, r.raw.replace("\x00", "\\0")))
    cur = conn.execute(
        """
        insert into metrics.rejected_rows (source_file, line_number, field, reason, raw_line, target_table)
        select %(file)s, s.line_number, s.field, s.reason, s.raw_line, %(table)s
        from rmp_rejected_stage s
        where not exists (
            select 1 from metrics.rejected_rows r
            where r.source_file = %(file)s and r.line_number = s.line_number
              and r.reason = s.reason and r.raw_line is not distinct from s.raw_line
        )
        """,
        {"file": source_file, "table": table},
    )
    conn.execute("drop table rmp_rejected_stage")
    return cur.rowcount
