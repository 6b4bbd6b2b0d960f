"""The metrics server protects the agent: a cap on connections (each one a thread) and idle ones dropped;
an address someone else holds is tried again in the background, said once in the log."""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from fondation_agent.host.metrics import Metrics, MetricsEndpoint, MetricsServer
from tests.helpers import eventually


@pytest.fixture
def serve() -> Iterator:
    started: list[MetricsServer] = []

    def start(**limits) -> MetricsServer:
        server = MetricsServer("127.0.0.1:0", Metrics("w"), lambda: (True, {"status": "ok"}), **limits).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def endpoint(server: MetricsServer) -> tuple[str, int]:
    host, _, port = server.address.rpartition(":")
    return host, int(port)


def health(server: MetricsServer | MetricsEndpoint) -> int | None:
    """/health's status, or None while the server turns the connection away."""
    try:
        with urllib.request.urlopen(f"http://{server.address}/health", timeout=30) as answer:
            return answer.status
    except OSError:
        return None


def test_connections_past_the_cap_are_closed_at_once_and_served_again_once_others_leave(serve) -> None:
    server = serve(max_connections=3, idle_timeout=600)
    idle = [socket.create_connection(endpoint(server)) for _ in range(3)]
    extra = socket.create_connection(endpoint(server))
    extra.settimeout(60)
    assert extra.recv(1) == b""  # accepted after the three idle ones, and hung up on
    extra.close()
    for connection in idle:
        connection.close()
    eventually(lambda: health(server) == 200)


def test_a_silent_client_is_dropped_and_frees_its_slot(serve) -> None:
    server = serve(max_connections=1, idle_timeout=0.2)
    silent = socket.create_connection(endpoint(server))
    silent.settimeout(60)
    assert silent.recv(1) == b""  # the server gave up on it
    silent.close()
    assert health(server) == 200


class Log:
    """Records what the endpoint logs."""

    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def warning(self, event: str, **fields) -> None:
        self.lines.append(("warning", event))

    def info(self, event: str, **fields) -> None:
        self.lines.append(("info", event, fields))


def test_a_free_address_is_listened_on_at_once_without_a_word() -> None:
    log = Log()
    endpoint = MetricsEndpoint("127.0.0.1:0", Metrics("w"), lambda: (True, {"status": "ok"}), log).start()
    try:
        assert endpoint.address is not None and endpoint.problem is None
        assert health(endpoint) == 200
        assert log.lines == []
    finally:
        endpoint.stop()


def test_a_held_address_is_tried_again_until_free_and_said_once_in_the_log() -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{squatter.getsockname()[1]}"
    log = Log()
    endpoint = MetricsEndpoint(address, Metrics("w"), lambda: (True, {"status": "ok"}), log, retry=(0.001, 0.004))
    try:
        endpoint.start()
        assert endpoint.address is None
        assert endpoint.problem == f"no metrics endpoint yet ({address}: Address already in use)"
        eventually(lambda: endpoint.attempts >= 5)
        squatter.close()
        eventually(lambda: endpoint.address == address)
        assert endpoint.problem is None and health(endpoint) == 200
        assert log.lines == [
            ("warning", "no metrics endpoint yet: cannot listen, trying again in the background"),
            ("info", "metrics endpoint listening", {"address": address, "attempts": endpoint.attempts}),
        ]
    finally:
        squatter.close()
        endpoint.stop()


def test_a_fresh_socket_goes_to_systemds_store_and_a_kept_one_is_served_again_without_a_bind() -> None:
    """What a restart under systemd does (FDSTORE=1, then LISTEN_FDS): the port is never free to take."""
    kept: list[int] = []
    first = MetricsEndpoint("127.0.0.1:0", Metrics("w"), lambda: (True, {"status": "ok"}), Log(),
                            keep=kept.append).start()
    try:
        assert kept and health(first) == 200
        address, stored = first.address, os.dup(kept[0])  # systemd's copy
    finally:
        first.stop()
    again: list[int] = []
    second = MetricsEndpoint(address, Metrics("w"), lambda: (True, {"status": "ok"}), Log(), inherited=stored,
                             keep=again.append).start()
    try:
        assert second.address == address and health(second) == 200
        assert again == [], "the kept socket is still in the store"
    finally:
        second.stop()


def test_a_kept_socket_of_another_address_is_dropped_from_the_store_and_a_new_one_bound() -> None:
    old = socket.create_server(("127.0.0.1", 0))
    forgotten, kept = [], []
    endpoint = MetricsEndpoint("127.0.0.1:0", Metrics("w"), lambda: (True, {"status": "ok"}), Log(),
                               inherited=os.dup(old.fileno()), keep=kept.append,
                               forget=lambda: forgotten.append(True)).start()
    try:
        assert forgotten == [True] and len(kept) == 1
        assert endpoint.address != f"127.0.0.1:{old.getsockname()[1]}" and health(endpoint) == 200
    finally:
        old.close()
        endpoint.stop()
