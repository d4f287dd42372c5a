"""Ports for the servers the tests start on 127.0.0.1.

A port picked by binding to port 0 and released is only probably free: another process (another
xdist worker starting its own server) may take it before our server binds. So every server start
goes through :func:`start_on_free_port`, which picks a port, starts, and on a bind failure picks
another one and tries again. A port that must refuse connections comes from :func:`closed_port`,
which holds a bound socket that never listens, instead of assuming some well-known port is closed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

BIND_ATTEMPTS = 5
# how servers report a port taken between our pick and their bind
ADDRESS_IN_USE = ("address already in use", "eaddrinuse", "errno 98", "could not bind")


class PortTaken(Exception):
    """Raised by a start function when its server could not bind the port it was given."""


def free_port() -> int:
    """A port that was free a moment ago (use through :func:`start_on_free_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def says_address_in_use(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in ADDRESS_IN_USE)


def start_on_free_port(start: Callable[[int], T], attempts: int = BIND_ATTEMPTS) -> T:
    """``start(port)`` on a fresh free port, again on another port each time it raises
    :class:`PortTaken`; after ``attempts`` tries the last failure propagates."""
    for attempt in range(attempts):
        try:
            return start(free_port())
        except PortTaken:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextmanager
def closed_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for as long as the block runs: the port is
    bound by a socket that never listens, so nothing else can take it and a connect gets
    ECONNREFUSED."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()
