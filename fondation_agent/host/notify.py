"""sd_notify(3) for the agent: READY, WATCHDOG, STATUS, STOPPING, RELOADING, EXTEND_TIMEOUT_USEC, and
the file descriptor store (FDSTORE=1: systemd keeps the metrics socket across restarts and hands it
back in LISTEN_FDS, sd_listen_fds_with_names(3)).

A thin wrapper over `sdnotify.SystemdNotifier`, which connects an AF_UNIX datagram socket to
`$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace, which sdnotify maps to a leading NUL).
Without `NOTIFY_SOCKET` (a laptop, CI, the tests) every call does nothing. No call ever raises or logs.

The notify and listen variables are read once and removed from `os.environ`, so job subprocesses
cannot talk to systemd as the agent (systemd only accepts the main PID by default, but a child must not
even try) nor take its sockets.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Mapping, MutableMapping

import sdnotify

NOTIFY_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
LISTEN_ENVIRONMENT = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
_SEND_TIMEOUT_S = 5.0


class Notifier:
    """Talks to systemd when started as `Type=notify`; harmless otherwise.

    `enabled`: NOTIFY_SOCKET was set (and the socket could be opened).
    `watchdog_interval`: the service's watchdog timeout in seconds (WATCHDOG_USEC, only if
    WATCHDOG_PID is unset or is this process), None without a watchdog. Send `watchdog()` at least
    every `watchdog_interval / 2` seconds, as sd_watchdog_enabled(3) advises.
    """

    enabled: bool
    watchdog_interval: float | None
    stored: dict[str, int]  # file descriptors systemd handed back from its store, by FDNAME

    def __init__(self) -> None:
        environ = os.environ
        self._notifier: sdnotify.SystemdNotifier | None = None
        if environ.get("NOTIFY_SOCKET"):
            with contextlib.suppress(Exception):
                notifier = sdnotify.SystemdNotifier()  # reads NOTIFY_SOCKET, connects; never raises
                if notifier.socket is not None:
                    notifier.socket.settimeout(_SEND_TIMEOUT_S)  # a stuck PID 1 must not hang the caller
                    self._notifier = notifier
        self.enabled = self._notifier is not None
        self.watchdog_interval = parse_watchdog_interval(environ) if self.enabled else None
        self.stored = take_listen_fds(environ)
        unset_notify_environment(environ)

    # -- messages ----------------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """READY=1, with STATUS= when given (also after a reload, to end RELOADING=1)."""
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        self._send(lines)

    def watchdog(self) -> None:
        """WATCHDOG=1: the service is alive; send more often than `watchdog_interval`."""
        self._send(["WATCHDOG=1"])

    def status(self, text: str) -> None:
        """STATUS=<text>, on one line (newlines become spaces)."""
        self._send(["STATUS=" + _one_line(text)])

    def stopping(self, extend_timeout_s: float | None = None) -> None:
        """STOPPING=1, plus EXTEND_TIMEOUT_USEC= to ask for that much more time to finish."""
        lines = ["STOPPING=1"]
        if extend_timeout_s is not None:
            lines.append(_extend_timeout_line(extend_timeout_s))
        self._send(lines)

    def extend_timeout(self, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC=: the current start/stop/runtime timeout is extended by `seconds` from now."""
        self._send([_extend_timeout_line(seconds)])

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC= (systemd >= 253 requires it for Type=notify-reload)."""
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(["RELOADING=1", f"MONOTONIC_USEC={now_us}"])

    def store_fd(self, fd: int, name: str) -> None:
        """FDSTORE=1: systemd keeps a copy of `fd` while the service restarts (FileDescriptorStoreMax=)."""
        self._send(["FDSTORE=1", f"FDNAME={name}"], fd)

    def remove_stored(self, name: str) -> None:
        self._send(["FDSTOREREMOVE=1", f"FDNAME={name}"])

    # -- plumbing ----------------------------------------------------------------------------------

    def _send(self, lines: list[str], fd: int | None = None) -> None:
        notifier = self._notifier
        if notifier is None:
            return
        message = "\n".join(lines).encode("utf-8", errors="replace")
        with contextlib.suppress(Exception):
            if fd is not None:  # sdnotify sends text only
                rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                notifier.socket.sendmsg([message], rights)
                return
            # sdnotify encodes the state as latin-1 (and silently drops anything else); send the
            # UTF-8 bytes systemd expects by handing it their latin-1 spelling.
            notifier.notify(message.decode("latin-1"))


def parse_watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """WATCHDOG_USEC in seconds; None if unset, not a positive integer, or WATCHDOG_PID is not `pid`."""
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def unset_notify_environment(environ: MutableMapping[str, str]) -> None:
    """Remove NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID so children never inherit them."""
    for name in NOTIFY_ENVIRONMENT:
        environ.pop(name, None)


def take_listen_fds(environ: MutableMapping[str, str], pid: int | None = None) -> dict[str, int]:
    """The file descriptors systemd passed (LISTEN_FDS, for this pid), by LISTEN_FDNAMES; the variables
    are removed and the descriptors made close-on-exec, so no job inherits them."""
    values = {name: environ.pop(name, "") for name in LISTEN_ENVIRONMENT}
    try:
        count, for_pid = int(values["LISTEN_FDS"]), int(values["LISTEN_PID"])
    except ValueError:
        return {}
    if for_pid != (os.getpid() if pid is None else pid) or count <= 0:
        return {}
    names = values["LISTEN_FDNAMES"].split(":")
    passed = {}
    for index in range(count):
        fd = LISTEN_FDS_START + index
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
            passed[names[index] if index < len(names) else f"fd{index}"] = fd
    return passed


def systemd_restarts(proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """NRestarts of the service this process runs in: systemd's automatic restarts (watchdog, crash)
    since the unit was last started by hand. None outside a service or when systemd does not say."""
    try:
        with open(proc_cgroup, encoding="utf-8") as handle:
            unit = handle.read().strip().rpartition("/")[2]
    except OSError:
        return None
    if not unit.endswith(".service"):
        return None
    try:
        shown = subprocess.run(["systemctl", "show", "--property=NRestarts", "--value", unit],
                               capture_output=True, text=True, timeout=10, check=True)
        return int(shown.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _one_line(text: str) -> str:
    return " ".join(str(text).replace("\0", " ").splitlines()).strip()


def _extend_timeout_line(seconds: float) -> str:
    try:
        usec = max(0, int(seconds * 1_000_000))
    except (TypeError, ValueError, OverflowError):
        usec = 0
    return f"EXTEND_TIMEOUT_USEC={usec}"
