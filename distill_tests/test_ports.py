"""The tests' port helpers: a port taken between pick and bind is retried, not a failed test;
a closed port really refuses."""

from __future__ import annotations

import socket

import pytest

from distill_tests.ports import PortTaken, closed_port, says_address_in_use, start_on_free_port


def test_a_taken_port_is_retried_on_another_port() -> None:
    tried: list[int] = []
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:

        def start(port: int) -> int:
            # the first pick is "stolen": bind as a server would, against a port someone holds
            tried.append(port)
            target = holder.getsockname()[1] if len(tried) == 1 else port
            with socket.socket() as server:
                try:
                    server.bind(("127.0.0.1", target))
                except OSError as exc:
                    assert says_address_in_use(str(exc))
                    raise PortTaken(str(exc)) from exc
                return target

        port = start_on_free_port(start)
    finally:
        holder.close()
    assert len(tried) == 2 and port == tried[1]


def test_a_port_that_stays_taken_fails_after_the_attempts() -> None:
    calls: list[int] = []

    def start(port: int) -> None:
        calls.append(port)
        raise PortTaken("Address already in use")

    with pytest.raises(PortTaken):
        start_on_free_port(start, attempts=3)
    assert len(calls) == 3


def test_other_start_failures_are_not_retried() -> None:
    calls: list[int] = []

    def start(port: int) -> None:
        calls.append(port)
        raise RuntimeError("bad config")

    with pytest.raises(RuntimeError, match="bad config"):
        start_on_free_port(start)
    assert len(calls) == 1


def test_closed_port_refuses_connections() -> None:
    with closed_port() as port, socket.socket() as client:
        with pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
