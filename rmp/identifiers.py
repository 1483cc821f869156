"""Names a user gives that end up in SQL as identifiers.

Values always travel as parameters; names cannot, so a name coming from a
user is checked before it is composed with ``psycopg.sql.Identifier``.
Relations a user may name (exports) are the allow-list ``rmp.catalog.EXPORTS``;
logins are checked here. PostgreSQL silently truncates identifiers to 63
bytes, so a longer name could address a different object: it is refused, not cut.
"""

from __future__ import annotations

import re

from rmp.errors import UserError

MAX_IDENTIFIER_BYTES = 63

_LOGIN = re.compile(r"^[a-z_][a-z0-9_.@-]*$")


class IdentifierError(UserError):
    """A name that cannot be used as an identifier."""


def _printable(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return repr(shown)


def check_login(name: str) -> str:
    """A role name a user types: lowercase, no quoting needed, at most 63 bytes."""
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(f"login name {_printable(name)} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    if not _LOGIN.match(name):
        raise IdentifierError(
            f"login name {_printable(name)}: use lowercase letters, digits and _ . @ - (starting with a letter or _)")
    return name
