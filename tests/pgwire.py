"""A bare PostgreSQL wire-protocol client for tests that must send what no driver sends.

It speaks just enough of protocol 3.0 to log in with trust authentication,
send arbitrary bytes and read the backend's messages back.
"""

from __future__ import annotations

import contextlib
import socket
import struct


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(text: str | bytes) -> bytes:
    return (text.encode() if isinstance(text, str) else text) + b"\0"


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


SYNC = message(b"S")


def error_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


class Closed(Exception):
    """The server closed the connection."""


class RawConnection:
    def __init__(self, host: str, port: int, user: str = "postgres", database: str = "template1",
                 timeout: float = 30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        params = cstr("user") + cstr(user) + cstr("database") + cstr(database) + b"\0"
        self.sock.sendall(struct.pack("!ii", len(params) + 8, 196608) + params)
        self.backend_pid = self.secret = None
        for kind, body in self.until_ready():
            if kind == b"E":
                raise Closed(error_fields(body).get("M"))
            if kind == b"K":
                self.backend_pid, self.secret = struct.unpack("!ii", body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self) -> tuple[bytes, bytes]:
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack("!i", self.buf[1:5])[0]
                if len(self.buf) >= length + 1:
                    kind, body = self.buf[:1], self.buf[5:length + 1]
                    self.buf = self.buf[length + 1:]
                    return kind, body
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as exc:
                raise Closed("reset") from exc
            if not chunk:
                raise Closed("eof")
            self.buf += chunk

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        """Messages up to and including the next ReadyForQuery."""
        out = []
        while True:
            kind, body = self.read_message()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
