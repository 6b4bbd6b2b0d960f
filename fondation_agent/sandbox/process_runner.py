"""The plain process runner (sandbox = "process"): start the CLI, stream its stdout, stop or time
out its whole process tree.

`ProcessRunner` puts the CLI in its own session and process group, for laptops and CI where systemd
is not the init. It cannot limit memory, CPU or tasks, and a child that calls setsid() leaves the
group: production uses the systemd-service runner (service_runner.py), which has the same
interface (runner.Runner). Each running group is recorded in a file (pid and kernel start time),
so that an agent restarted after a crash can kill the CLIs its predecessor left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fondation_agent.sandbox.runner import Limits, Outcome, StderrTail, classify, pipe_lines
from fondation_agent.sandbox.workspace import fresh_home_and_tmp

# How long wait() gives SIGKILLed processes to be gone (the kernel needs milliseconds).
GROUP_EXIT_WAIT_S = 5.0


def _stat_fields(stat: Path) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, …; None once the process is gone."""
    try:
        return stat.read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields[19] if fields else None


class ProcessCli:
    """One CLI run as a process group (runner.RunningCli)."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, limits: Limits, record: Path):
        self.limits = limits
        self._deadline = time.monotonic() + limits.timeout
        self._stopped = False
        self._timed_out = False
        self._terminating = threading.Lock()
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._record = record
        record.write_text(f"{self._process.pid} {_start_time(self._process.pid)}\n")
        self._stderr = StderrTail(self._process.stderr)
        self._stderr.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def stdout_lines(self) -> Iterator[str]:
        return pipe_lines(self._process.stdout)

    def stop(self) -> None:
        """Stops the whole tree without blocking the caller (cancel, lease lost, shutdown)."""
        if self._stopped:
            return
        self._stopped = True
        threading.Thread(target=self._terminate_group, daemon=True, name="cli-stop").start()

    def wait(self) -> Outcome:
        """Waits for the CLI, enforcing the timeout; returns once the whole group is gone."""
        try:
            self._process.wait(timeout=max(0.0, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self._terminate_group()
            self._process.wait()
        self._kill_group()  # children left behind by a CLI that exited
        # SIGKILL is delivered asynchronously: "gone" means no member still running.
        _wait_until(lambda: not self._group_alive(), GROUP_EXIT_WAIT_S)
        self._record.unlink(missing_ok=True)
        self._stderr.join(timeout=5)
        self._process.stdout.close()
        code = self._process.returncode
        return Outcome(classify(code, stopped=self._stopped, timed_out=self._timed_out), code, self._stderr.text())

    def _terminate_group(self) -> None:
        with self._terminating:
            self._signal_group(signal.SIGTERM)
            _wait_until(lambda: not self._group_alive(), self.limits.kill_grace)
            self._kill_group()

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _group_alive(self) -> bool:
        return self._process.poll() is None or _group_has_running_member(self._process.pid)


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    ends = time.monotonic() + seconds
    while not condition() and time.monotonic() < ends:
        time.sleep(0.02)


def _group_has_running_member(pgid: int) -> bool:
    """Whether a process of the group is still running. Zombies do not count (killpg(pgid, 0) would:
    an orphan's zombie lingers until whoever adopted it reaps it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class ProcessRunner:
    """runner.Runner for sandbox = \"process\"."""

    name = "process"

    def __init__(self, records: Path):
        """`records`: a directory of this worker's own, where each running CLI's group is noted."""
        self.records = records

    def cleanup_leftovers(self) -> list[str]:
        """Kills the process groups of CLIs an earlier run of this worker left (kill -9, crash)."""
        stopped = []
        for record in sorted(self.records.glob("*.pgid")) if self.records.is_dir() else []:
            pid, _, started = record.read_text().strip().partition(" ")
            # The start time guards against a recycled pid: only the very process we started counts.
            if pid.isdigit() and _start_time(int(pid)) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
                    stopped.append(record.stem)
            record.unlink()
        return stopped

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> ProcessCli:
        """`cwd` is the workspace's repo/: the job's HOME and TMPDIR are made beside it."""
        self.records.mkdir(mode=0o700, parents=True, exist_ok=True)
        home, tmp = fresh_home_and_tmp(cwd.parent)
        env = {**env, "HOME": str(home), "TMPDIR": str(tmp)}
        return ProcessCli(argv, env=env, cwd=cwd, limits=limits, record=self.records / f"{unit}.pgid")

    def give_disk(self, workspace: Path, disk_max: int) -> bool:
        return False  # no disk limit: this sandbox isolates nothing

    def release_disk(self, workspace: Path) -> bool:
        return True
