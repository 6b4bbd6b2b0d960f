"""What every scenario needs: the machine's description, a localconvex backend, agent processes,
a git repository to clone, the producer's calls, the agents' JSON logs, statistics and tables."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
import tomli_w

from fondation_agent.queue.convex_api import ConvexHttp, operator_docs
from localconvex.launcher import LocalConvex

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_CLI = REPO_ROOT / "bench" / "cli.py"
TOKEN = "bench-worker-token"  # noqa: S105 - a throwaway token shared by a local backend and its agents
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- the machine ------------------------------------------------------------------------------


def load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"load1": round(one, 2), "load5": round(five, 2), "load15": round(fifteen, 2), "nproc": os.cpu_count()}


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _output(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    commit = _output("git", "rev-parse", "--short", "HEAD")
    dirty = bool(_output("git", "status", "--porcelain", "--untracked-files=no"))
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "uname": " ".join(platform.uname()),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "memory_mb": _mem_total_mb(),
        "python": platform.python_version(),
        "node": _output("node", "--version"),
        "git": f"{commit}{' (uncommitted changes)' if dirty else ''}",
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        "uptime": uptime_line(),
    }


def _mem_total_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


# ---- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def backend(state_file: Path | None = None) -> LocalConvex:
    """A localconvex, in memory unless a scenario needs it to survive a restart (we measure the agent,
    not snapshot writes)."""
    return LocalConvex(token=TOKEN, env={"FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1"}, state_file=state_file)


class BenchAgent:
    """One `fondation-agent run` process: defaults everywhere but what a scenario sets."""

    def __init__(self, directory: Path, backend_url: str, name: str, **settings: Any):
        self.name = name
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        token_file = self.directory / "worker-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        claude_file = self.directory / "claude.env"  # the bench's CLI never calls Claude
        claude_file.write_text("ANTHROPIC_API_KEY=bench-needs-no-key\n")
        claude_file.chmod(0o600)
        self.metrics_port = free_port()
        self.settings = {
            "convex_url": backend_url,
            "worker_id": name,
            "worker_token_file": str(token_file),
            "claude_credentials_file": str(claude_file),
            "temp_dir": str(self.directory / "workspaces"),
            "allow_local_repositories": True,
            "allow_unisolated": True,  # process sandbox, deliberately: the bench measures the agent, not isolation
            "cli_command": f"{sys.executable} -I -S {BENCH_CLI} {{repo}} {{output}} {{prompt}}",
            "metrics_address": f"127.0.0.1:{self.metrics_port}",
            **settings,
        }
        self.config_path = self.directory / "agent.toml"
        self.config_path.write_text(tomli_w.dumps(self.settings))
        self.log_path = self.directory / "agent.log"
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> BenchAgent:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEX", "FONDATION"))}
        environment.pop("NOTIFY_SOCKET", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fondation_agent.cli", "run", "--config", str(self.config_path)],
                cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def wait_healthy(self, timeout: float = 60) -> None:
        """Until /health says ok: the loop turns and Convex answered the first claim."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url("/health"), timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.name} not healthy after {timeout} s:\n{self.log_text()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed `name{labels}`."""
        samples = {}
        for line in requests.get(self.url("/metrics"), timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
        return found


@contextlib.contextmanager
def agents_running(agents: list[BenchAgent], stagger: float = 0.0) -> Iterator[list[BenchAgent]]:
    """Starts the agents (at random moments within `stagger` s, so their polls are not in phase),
    waits until all are healthy, and stops them all at the end."""
    try:
        offsets = sorted(random.uniform(0, stagger) for _ in agents)
        started = time.monotonic()
        for agent, offset in zip(agents, offsets, strict=True):
            time.sleep(max(0.0, started + offset - time.monotonic()))
            agent.spawn()
        for agent in agents:
            agent.wait_healthy()
        yield agents
    finally:
        threads = [threading.Thread(target=agent.stop) for agent in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{label}="{wanted}"' in rest for label, wanted in labels.items()):
            total += value
    return total


# ---- the producer -----------------------------------------------------------------------------


def make_git_repo(path: Path) -> Path:
    """A tiny repository, as the agent would clone a small project."""
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, env={**os.environ, **GIT_IDENTITY})

    git("init", "-q", "-b", "main")
    (path / "app.py").write_text("import util\n\nprint(util.X)\n")
    (path / "util.py").write_text("X = 1\n")
    (path / "README.md").write_text("# Bench repository\n")
    git("add", "-A")
    git("commit", "-q", "-m", "initial")
    return path


class Producer:
    """What the operator does (operator:*, with the backend's admin key): enqueue jobs and read them back."""

    def __init__(self, server: LocalConvex):
        self.client = ConvexHttp(server.url, read_timeout=30, retries=2, admin_key=server.admin_key)

    def close(self) -> None:
        self.client.close()

    def enqueue(self, repository: Path, prompt: str) -> str:
        return self.client.mutation("operator:enqueue", {"repositoryUrl": str(repository), "prompt": prompt})

    def get(self, job_id: str) -> dict[str, Any]:
        return self.client.query("operator:get", {"jobId": job_id})

    def docs(self, job_id: str) -> list[dict[str, Any]]:
        return operator_docs(self.client, job_id)

    def wait_all_finished(self, job_ids: Iterable[str], timeout: float, poll: float = 0.25) -> dict[str, dict]:
        """Until every job is completed, failed or canceled (or `timeout`); returns the final rows."""
        pending = list(job_ids)
        rows: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                row = self.get(job_id)
                if row["status"] in ("completed", "failed", "canceled"):
                    rows[job_id] = row
                else:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(poll)
        for job_id in pending:
            rows[job_id] = self.get(job_id)
        return rows


# ---- logs -------------------------------------------------------------------------------------


def timestamp(event: dict[str, Any]) -> float:
    """Unix seconds of a log line's ISO 8601 `timestamp`."""
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def job_timelines(agents: Iterable[BenchAgent]) -> dict[str, list[dict[str, Any]]]:
    """Per job id, every attempt's milestones as Unix seconds (agent clock): claimed, cloning,
    analyzing, cli_started, cli_ended, gathering, ended (+ seconds, outcome, agent)."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        current: dict[str, dict[str, Any]] = {}
        for event in agent.events():
            job_id = event.get("job_id")
            if not job_id:
                continue
            name = event.get("event")
            if name == "job claimed":
                current[job_id] = {"agent": agent.name, "claimed": timestamp(event)}
                attempts.setdefault(job_id, []).append(current[job_id])
                continue
            timeline = current.get(job_id)
            if timeline is None:
                continue
            if name == "stage":
                timeline[event.get("status", "?")] = timestamp(event)
            elif name == "CLI started":
                timeline["cli_started"] = timestamp(event)
            elif name == "CLI ended":
                timeline["cli_ended"] = timestamp(event)
                timeline["cli_result"] = event.get("result")
            elif name == "job ended":
                timeline["ended"] = timestamp(event)
                timeline["seconds"] = float(event.get("seconds", math.nan))
                timeline["outcome"] = event.get("outcome")
    return attempts


# ---- statistics and tables --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


def fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    lines = [
        "| " + " | ".join(header.ljust(widths[i]) for i, header in enumerate(headers)) + " |",
        "|" + "|".join("-" * (width + 2) for width in widths) + "|",
    ]
    lines += ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in cells]
    return "\n".join(lines)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_in_threads(functions: list[Callable[[], Any]]) -> list[Any]:
    """Runs the functions side by side; returns their results in order, re-raising the first error."""
    results: list[Any] = [None] * len(functions)
    errors: list[BaseException] = []

    def call(index: int, function: Callable[[], Any]) -> None:
        try:
            results[index] = function()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def workdir(keep: bool) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="fondation-bench-"))
    if not keep:
        import atexit

        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
