"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fondation_agent.host.notify import (
    LISTEN_FDS_START,
    Notifier,
    parse_watchdog_interval,
    systemd_restarts,
    take_listen_fds,
    unset_notify_environment,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def systemd(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket, announced in NOTIFY_SOCKET; yields it for reading."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    path = short_dir / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield server
    finally:
        server.close()


def received(server: socket.socket) -> str:
    return server.recv(65536).decode("utf-8")


def assert_nothing_more(server: socket.socket) -> None:
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        server.recv(65536)


def test_ready_with_status_is_one_datagram(systemd: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready("0/2 slots busy")
    assert received(systemd) == "READY=1\nSTATUS=0/2 slots busy"
    notifier.ready()
    assert received(systemd) == "READY=1"
    assert_nothing_more(systemd)


def test_each_message(systemd: socket.socket) -> None:
    notifier = Notifier()
    notifier.watchdog()
    assert received(systemd) == "WATCHDOG=1"
    notifier.status("line one\nline two\r\nthree")
    assert received(systemd) == "STATUS=line one line two three"
    notifier.status("2 jobs → draining")  # UTF-8, not latin-1 (sdnotify alone would drop it)
    assert received(systemd) == "STATUS=2 jobs → draining"
    notifier.stopping()
    assert received(systemd) == "STOPPING=1"
    notifier.stopping(extend_timeout_s=90.5)
    assert received(systemd) == "STOPPING=1\nEXTEND_TIMEOUT_USEC=90500000"
    notifier.extend_timeout(12)
    assert received(systemd) == "EXTEND_TIMEOUT_USEC=12000000"


def test_reloading_carries_the_monotonic_clock(systemd: socket.socket) -> None:
    notifier = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(systemd).split("\n")
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_environment_is_cleaned_after_reading(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.watchdog_interval == 20.0
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    # Still talks to systemd after the variables are gone.
    notifier.watchdog()
    assert received(systemd) == "WATCHDOG=1"


def test_watchdog_pid_of_another_process_means_no_watchdog(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval is None


def test_watchdog_without_pid_is_ours(systemd: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1500000")
    assert Notifier().watchdog_interval == 1.5


def test_no_watchdog(systemd: socket.socket) -> None:
    assert Notifier().watchdog_interval is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_parse_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert parse_watchdog_interval(environ, pid=4242) == expected


def test_harmless_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert "WATCHDOG_USEC" not in os.environ
    notifier.ready("x")
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping(extend_timeout_s=1)
    notifier.extend_timeout(1)
    notifier.reloading()


def test_quiet_when_the_socket_goes_away(systemd: socket.socket) -> None:
    notifier = Notifier()
    os.unlink(systemd.getsockname())
    systemd.close()
    notifier.ready("gone")  # ECONNREFUSED: swallowed
    notifier.watchdog()


def test_quiet_when_notify_socket_does_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing.sock"))
    notifier = Notifier()
    assert not notifier.enabled
    assert "NOTIFY_SOCKET" not in os.environ
    notifier.ready()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fondation-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        assert notifier.enabled
        notifier.ready("abstract")
        assert received(server) == "READY=1\nSTATUS=abstract"
    finally:
        server.close()


def test_unset_notify_environment_leaves_the_rest() -> None:
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1",
               "PATH": "/bin"}
    unset_notify_environment(environ)
    assert environ == {"PATH": "/bin"}
    unset_notify_environment(environ)  # idempotent


def fake_systemctl(directory: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """A `systemctl` first on PATH that records its arguments and runs `script`."""
    bindir = directory / "bin"
    bindir.mkdir()
    program = bindir / "systemctl"
    program.write_text(f'#!/bin/sh\necho "$@" > "{directory}/argv"\n{script}\n')
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return directory / "argv"


def test_systemd_restarts_asks_systemd_about_the_unit_of_this_process(tmp_path: Path, monkeypatch) -> None:
    argv = fake_systemctl(tmp_path, monkeypatch, "echo 3")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/system.slice/system-fondation\\x2dagent.slice/fondation-agent@2.service\n")
    assert systemd_restarts(str(cgroup)) == 3
    assert argv.read_text().split() == ["show", "--property=NRestarts", "--value", "fondation-agent@2.service"]


def test_systemd_restarts_is_none_outside_a_service_or_when_systemd_does_not_answer(tmp_path: Path, monkeypatch):
    fake_systemctl(tmp_path, monkeypatch, "echo 'Failed to connect to bus' >&2; exit 1")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/user.slice/user-1000.slice/session-2.scope\n")
    assert systemd_restarts(str(cgroup)) is None
    cgroup.write_text("0::/system.slice/fondation-agent.service\n")
    assert systemd_restarts(str(cgroup)) is None
    assert systemd_restarts(str(tmp_path / "missing")) is None


def test_a_stored_fd_travels_with_its_name(systemd: socket.socket) -> None:
    reader, writer = os.pipe()
    try:
        Notifier().store_fd(writer, "metrics")
        message, fds, _, _ = socket.recv_fds(systemd, 65536, 1)
        assert message.decode() == "FDSTORE=1\nFDNAME=metrics" and len(fds) == 1
        os.write(fds[0], b"x")  # the very pipe
        assert os.read(reader, 1) == b"x"
        os.close(fds[0])
    finally:
        os.close(reader)
        os.close(writer)


def test_listen_fds_are_taken_by_name_only_for_this_pid_and_not_inherited() -> None:
    reader, writer = os.pipe()
    os.set_inheritable(writer, True)
    first = take_listen_fds({"LISTEN_FDS": "1", "LISTEN_PID": "42", "LISTEN_FDNAMES": "metrics"}, pid=41)
    assert first == {}
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "metrics"}
    try:
        saved = os.dup(LISTEN_FDS_START)  # whatever the test runner has as fd 3, put back afterwards
    except OSError:
        saved = None
    try:
        os.dup2(writer, LISTEN_FDS_START)
        assert take_listen_fds(environ) == {"metrics": LISTEN_FDS_START}
        assert environ == {} and not os.get_inheritable(LISTEN_FDS_START)
    finally:
        if saved is None:
            os.close(LISTEN_FDS_START)
        else:
            os.dup2(saved, LISTEN_FDS_START, inheritable=False)
            os.close(saved)
        os.close(reader)
        os.close(writer)
