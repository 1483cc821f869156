"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input or a state the user can fix; the message names what and where."""

    exit_code = 2


class EngineError(UserError):
    """The database engine is not reachable or could not be started."""

    exit_code = 3
