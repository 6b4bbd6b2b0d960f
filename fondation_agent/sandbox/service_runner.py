"""The production runner (sandbox = "systemd-service", formerly "systemd-scope"): each job a hardened
transient system service, started by the root job launcher (launcher.py) under a user of the job pool.

The agent runs with NoNewPrivileges and no capabilities: it cannot start units itself. For each CLI
it makes two pipes, connects to /run/fondation-jobs-launcher.sock and sends one `run` request (the
argv, the allowlisted environment, the workspace, the limits) with the pipes' write ends; it keeps
the read ends. The launcher answers `started`, and `finished` (systemd's Result and the exit status)
once the unit is gone and the workspace is the agent's again. Stopping is a `stop` request; the
timeout is the unit's RuntimeMaxSec, with a local deadline only as a backstop. At start-up a
`leftovers` request stops what an earlier run of this worker left.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fondation_agent.host.logs import get_logger
from fondation_agent.sandbox.launcher import (
    EX_USAGE,
    RESERVED_ENV,
    SOCKET_PATH,
    UNIT_PATTERN,
    WORKSPACES,
    unit_description,
)
from fondation_agent.sandbox.runner import (
    DiskUnavailable,
    Limits,
    Outcome,
    RunResult,
    SandboxUnusable,
    StderrTail,
    classify,
    pipe_lines,
)
from fondation_agent.sandbox.workspace import fresh_home_and_tmp

# After RuntimeMaxSec (plus the stop's kill_grace) systemd has stopped the unit; this is only a backstop.
SAFETY_MARGIN_S = 30.0
REQUEST_TIMEOUT_S = 120.0  # a launcher answer that is not the job's end (started, stop, leftovers)
EX_SOFTWARE = 70


class LauncherUnavailable(Exception):
    pass


class _Channel:
    """One connection to the launcher: a request line (with file descriptors) out, answer lines in."""

    def __init__(self, path: str, request: Mapping[str, Any], fds: list[int] = ()):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._buffer = b""
        try:
            self.sock.settimeout(REQUEST_TIMEOUT_S)
            self.sock.connect(path)
            socket.send_fds(self.sock, [json.dumps(dict(request)).encode("utf-8") + b"\n"], list(fds))
        except OSError as error:
            self.sock.close()
            raise LauncherUnavailable(f"cannot reach the job launcher at {path}: {error.strerror or error}") from None

    def answer(self, timeout: float | None = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """The next answer; {} when the launcher closed the connection without one."""
        self.sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)  # raises TimeoutError past the timeout
            if not chunk:
                return {}
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line.decode("utf-8"))

    def close(self) -> None:
        self.sock.close()


class ServiceCli:
    """One CLI run in a transient service (runner.RunningCli)."""

    def __init__(self, runner: SystemdServiceRunner, argv: list[str], *, env: Mapping[str, str], cwd: Path,
                 unit: str, limits: Limits):
        if not UNIT_PATTERN.fullmatch(unit):
            raise ValueError(f"unit name {unit!r} is not fondation-job-<jobId>-<attempt>")
        self.runner = runner
        self.unit = unit
        self.limits = limits
        self._deadline = time.monotonic() + limits.timeout + limits.kill_grace + SAFETY_MARGIN_S
        self._stopped = False
        self._timed_out = False
        self._finished = threading.Event()
        self._refusal = ""
        self._request_refused = False  # the launcher refused the request itself (EX_USAGE), not for the host
        workspace = cwd.parent
        fresh_home_and_tmp(workspace)  # the launcher makes them the job's HOME and /tmp
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        self._stdout = os.fdopen(out_read, "rb")
        self._stderr = StderrTail(os.fdopen(err_read, "rb"))
        self._stderr.start()
        request = {
            "op": "run",
            "unit": unit,
            "description": unit_description(unit, runner.worker_id),
            "workspace": str(workspace),
            "argv": list(argv),
            # HOME, USER, … are the job user's: the launcher sets them.
            "env": {name: value for name, value in env.items() if name not in RESERVED_ENV},
            "limits": {
                "memory_max": limits.memory_max,
                "cpu_quota": limits.cpu_quota,
                "tasks_max": limits.tasks_max,
                "runtime_max_ms": max(1, round(limits.timeout * 1000)),
                "stop_timeout_ms": max(1, round(limits.kill_grace * 1000)),
            },
        }
        try:
            self._channel: _Channel | None = _Channel(runner.socket_path, request, [out_write, err_write])
        except LauncherUnavailable as error:
            self._channel = None
            self._refusal = str(error)
        finally:
            os.close(out_write)  # only the job holds them now: their end (EOF) is the job's end
            os.close(err_write)
        if self._channel is not None:  # the launcher may first wait for a job user, then chown the clone
            started = self._read_answer(max(REQUEST_TIMEOUT_S, self._deadline - time.monotonic()))
            if started.get("event") != "started":
                self._refusal = started.get("error") or "the job launcher did not start the job"
                self._request_refused = started.get("status") == EX_USAGE

    @property
    def pid(self) -> None:
        """The CLI runs under another user in a unit of PID 1: the agent knows its unit, not its pid."""
        return None

    def stdout_lines(self) -> Iterator[str]:
        return pipe_lines(self._stdout)

    def stop(self) -> None:
        """Stops the unit (the whole tree) without blocking the caller; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        threading.Thread(target=self._stop_until_finished, daemon=True, name=f"stop-{self.unit}").start()

    def wait(self) -> Outcome:
        report: dict[str, Any] = {}
        if not self._refusal:
            report = self._read_answer(max(0.0, self._deadline - time.monotonic()))
            if report.get("event") is None and not report.get("error") and not self._finished.is_set():
                self._timed_out = True  # systemd's RuntimeMaxSec should have fired long ago
                self.runner.log.warning("job unit outlived its RuntimeMaxSec; stopping it", unit=self.unit)
                threading.Thread(target=self._stop_until_finished, daemon=True).start()
                report = self._read_answer(self.limits.kill_grace + REQUEST_TIMEOUT_S)
        self._finished.set()
        if self._channel is not None:
            self._channel.close()
        self._stderr.join(timeout=5)
        self._stdout.close()
        tail = self._stderr.text()
        refusal = self._refusal or report.get("error", "")
        if refusal or report.get("event") != "finished":
            message = refusal or "the job launcher ended without a report"
            result = RunResult.REFUSED if self._request_refused else RunResult.UNAVAILABLE
            return Outcome(result, EX_SOFTWARE, f"{tail}\n{message}".strip())
        code = int(report.get("exit_code") or 0)
        result = report.get("result", "")
        outcome = classify(code, stopped=self._stopped, timed_out=self._timed_out or result == RunResult.TIMEOUT,
                           oom_killed=result == RunResult.OOM_KILL)
        return Outcome(outcome, code, tail)

    def _read_answer(self, timeout: float) -> dict[str, Any]:
        try:
            return self._channel.answer(timeout)
        except TimeoutError:
            return {}
        except (OSError, ValueError) as error:
            return {"error": f"lost the job launcher: {error}"}

    def _stop_until_finished(self) -> None:
        """`stop` requests until the launcher reports the end (the unit may not have existed yet)."""
        for _ in range(20):
            if self._finished.is_set():
                return
            try:
                self.runner.request({"op": "stop", "unit": self.unit})
            except LauncherUnavailable as error:
                self.runner.log.error("cannot stop a job unit", unit=self.unit, error=str(error))
            if self._finished.wait(self.limits.kill_grace + 5):
                return
        self.runner.log.error("job unit would not stop", unit=self.unit)


class SystemdServiceRunner:
    """runner.Runner for sandbox = \"systemd-service\"."""

    name = "systemd-service"

    def __init__(self, config: Any, *, socket_path: str = SOCKET_PATH, workspaces: Path = WORKSPACES):
        self.log = get_logger()
        self.worker_id = config.worker_id
        self.temp_dir = Path(config.temp_dir)
        self.socket_path = socket_path
        if self.temp_dir != workspaces:
            raise SandboxUnusable(f"temp_dir: must be {workspaces} with sandbox = systemd-service (the launcher's)")
        self.temp_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.temp_dir, 0o711)  # noqa: S103 (jobs pass through to their own workspace, list nothing)
        # Now, not only in cleanup_leftovers(): the worker removes leftover workspaces before calling
        # it, and those hold files of job users that only the launcher's hand-back makes removable.
        try:
            self._stopped_at_start: list[str] | None = self._leftovers()
        except LauncherUnavailable as error:
            raise SandboxUnusable(f"sandbox: {error} (is fondation-jobs-launcher.socket enabled?)") from None

    def cleanup_leftovers(self) -> list[str]:
        """Stops and resets every unit an earlier run of this worker left; the launcher hands back its workspaces."""
        if self._stopped_at_start is not None:  # the first call: done a moment ago by __init__
            units, self._stopped_at_start = self._stopped_at_start, None
            return units
        return self._leftovers()

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> ServiceCli:
        return ServiceCli(self, argv, env=env, cwd=cwd, unit=unit, limits=limits)

    def give_disk(self, workspace: Path, disk_max: int) -> bool:
        try:
            self.ask({"op": "disk", "workspace": str(workspace), "worker": self.worker_id, "disk_max_bytes": disk_max})
        except LauncherUnavailable as error:
            raise DiskUnavailable(str(error)) from None
        return True

    def release_disk(self, workspace: Path) -> bool:
        try:
            self.ask({"op": "release", "workspace": str(workspace), "worker": self.worker_id})
        except LauncherUnavailable as error:
            self.log.error("cannot release a job's disk", workspace=str(workspace), error=str(error))
            return False
        return True

    def ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """request(), with the launcher's refusal raised as LauncherUnavailable too."""
        answer = self.request(request)
        if "error" in answer:
            raise LauncherUnavailable(answer["error"])
        return answer

    def request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        channel = _Channel(self.socket_path, request)
        try:
            return channel.answer()
        except (OSError, ValueError) as error:
            raise LauncherUnavailable(f"the job launcher did not answer: {error}") from None
        finally:
            channel.close()

    def _leftovers(self) -> list[str]:
        answer = self.ask({"op": "leftovers", "worker": self.worker_id})
        if answer.get("units"):
            self.log.info("stopped leftover job units", units=answer["units"], workspaces=answer.get("workspaces"))
        return list(answer.get("units", []))
