"""Errors of the ingest stage that a user can cause; the CLI prints each as one line."""

from __future__ import annotations

from rmp.errors import UserError


class IngestFileError(UserError):
    """A whole input file cannot be loaded: unreadable, empty, unknown format or header."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class IngestSetupError(UserError):
    """The database lacks what a load needs (migrations not applied, unknown table)."""
