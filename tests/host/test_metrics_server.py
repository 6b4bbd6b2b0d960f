"""The metrics server protects the agent: a cap on connections (each one a thread) and idle ones dropped."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from fondation_agent.host.metrics import Metrics, MetricsServer
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


def health(server: MetricsServer) -> int | None:
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
