"""What a CLI runner is: the interface both runners satisfy, and what they share.

A runner starts the CLI for one job attempt under limits and hands back a `RunningCli`: its stdout
lines, a non-blocking `stop()`, and `wait()` for its `Outcome`. Two runners exist, chosen by the
`sandbox` setting: `process_runner.ProcessRunner` (a plain process group: laptops, CI) and
`service_runner.SystemdServiceRunner` (a hardened transient systemd service started by the root
job launcher, launcher.py: production). The rooms follow the programs and their users: the agent
(user fondation) runs the runners; the launcher, a program of its own, runs as root; nothing of the
agent's code runs as a job user, whose unit runs the CLI itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

STDERR_TAIL_BYTES = 8192
MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    timeout: float
    kill_grace: float
    memory_max: str
    cpu_quota: str
    tasks_max: int


class RunResult(StrEnum):
    """How a CLI run ended (the values are systemd's Result names where it has one)."""

    SUCCESS = "success"
    EXIT_CODE = "exit-code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    OOM_KILL = "oom-kill"
    STOPPED = "stopped"  # we stopped it (cancel, lease lost, shutdown)
    REFUSED = "refused"  # the sandbox refused the agent's request to run it (a bad request: the agent's fault)
    UNAVAILABLE = "unavailable"  # the sandbox could not run it (the host's fault)


@dataclass(frozen=True)
class Outcome:
    result: RunResult
    exit_code: int | None
    stderr_tail: str

    def describe(self, limits: Limits) -> str:
        if self.result == RunResult.TIMEOUT:
            return f"the CLI ran past job_timeout ({limits.timeout:g} s) and was stopped"
        if self.result == RunResult.OOM_KILL:
            return f"the CLI ran out of memory (MemoryMax={limits.memory_max}) and was killed"
        if self.result == RunResult.SIGNAL:
            return f"the CLI was killed by signal {-(self.exit_code or 0)}"
        if self.result == RunResult.REFUSED:
            return "the sandbox refused the agent's request to run the CLI"
        if self.result == RunResult.UNAVAILABLE:
            return "the sandbox could not run the CLI"
        return f"the CLI exited with status {self.exit_code}"


class RunningCli(Protocol):
    @property
    def pid(self) -> int | None: ...

    def stdout_lines(self) -> Iterator[str]: ...

    def stop(self) -> None:
        """Stops the whole tree without blocking the caller; idempotent."""

    def wait(self) -> Outcome:
        """Waits for the end (enforcing the timeout); returns once nothing of the CLI runs."""


class DiskUnavailable(Exception):
    """The host could not give a job its disk (a host problem: the job goes to another host)."""


class SandboxUnusable(Exception):
    """The configured sandbox cannot run on this host; the message names the setting (a config error)."""


class Runner(Protocol):
    name: str

    def cleanup_leftovers(self) -> list[str]:
        """Stops what an earlier run of this worker left running (after a crash); names what it stopped."""

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path, unit: str, limits: Limits) -> RunningCli: ...

    def give_disk(self, workspace: Path, disk_max: int) -> bool:
        """Gives a new, empty workspace a file system of its own (disk_max bytes); False if this sandbox
        has none. Raises DiskUnavailable when it should have one but the host cannot give it."""

    def release_disk(self, workspace: Path) -> bool:
        """Unmounts and deletes a workspace's own file system; False if it could not (it stays for the
        leftovers' clean-up at the next start)."""


def classify(code: int, *, stopped: bool, timed_out: bool, oom_killed: bool = False) -> RunResult:
    """How the CLI ended: what we did to it first, then what the kernel did."""
    if stopped:
        return RunResult.STOPPED
    if timed_out:
        return RunResult.TIMEOUT
    if code == 0:
        return RunResult.SUCCESS
    if oom_killed:
        return RunResult.OOM_KILL
    return RunResult.SIGNAL if code < 0 else RunResult.EXIT_CODE


def pipe_lines(pipe) -> Iterator[str]:
    """Decoded lines of a CLI's stdout (over-long lines are cut); ends when the pipe closes."""
    for raw in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


class StderrTail(threading.Thread):
    """Drains a pipe, keeping only its last bytes (for error messages), so the child never blocks."""

    def __init__(self, pipe):
        super().__init__(daemon=True, name="cli-stderr")
        self.pipe = pipe
        self.tail = bytearray()

    def run(self) -> None:
        for chunk in iter(lambda: self.pipe.read1(65536), b""):
            self.tail += chunk
            del self.tail[:-STDERR_TAIL_BYTES]

    def text(self) -> str:
        return self.tail.decode("utf-8", errors="replace").strip()
