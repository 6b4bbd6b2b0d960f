"""Shared fixtures: a real localconvex backend over HTTP, real git repositories, real agents."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.convex_api import ConvexHttp
from localconvex.launcher import LocalConvex
from tests.agent_process import Agent

TOKEN = "test-worker-token"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
TERMINAL = ("completed", "failed", "canceled")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY}).stdout


def make_git_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, content in (files or {"app.py": "import util\n", "util.py": "X = 1\n", "README.md": "# Demo\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    return path


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for AF_UNIX sockets: their paths are limited to 107 bytes, tmp_path can be longer."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="fa-sock-", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "source-repo")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalConvex]:
    server = LocalConvex(
        state_file=tmp_path / "backend-state.json",
        token=TOKEN,
        env={"FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1"},
    )
    with server:
        yield server


@pytest.fixture
def convex(backend: LocalConvex) -> Iterator[ConvexHttp]:
    """The operator's client: it carries the admin key, so it reaches operator:* as well as worker:*."""
    client = ConvexHttp(backend.url, read_timeout=10, retries=0, admin_key=backend.admin_key)
    yield client
    client.close()


def eventually(check: Callable[[], Any], timeout: float = 10, interval: float = 0.1) -> Any:
    """Polls until check() returns something truthy; fails with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout} s"
            return value
        time.sleep(interval)


class Queue:
    """What the operator does with the queue (operator:*, with the admin key), plus waiting helpers for tests."""

    def __init__(self, client: ConvexHttp):
        self.client = client

    def enqueue(self, repository: str | Path, prompt: str = "succeed", **extra: Any) -> str:
        return self.client.mutation("operator:enqueue", {"repositoryUrl": str(repository), "prompt": prompt, **extra})

    def get(self, job_id: str) -> dict:
        return self.client.query("operator:get", {"jobId": job_id})

    def docs(self, job_id: str) -> list[dict]:
        return self.client.query("operator:docs", {"jobId": job_id})

    def wait_for(self, job_id: str, predicate: Callable[[dict], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while not predicate(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s: {job}")
            time.sleep(0.1)
            job = self.get(job_id)
        return job

    def wait_finished(self, job_id: str, timeout: float = 60) -> dict:
        return self.wait_for(job_id, lambda job: job["status"] in TERMINAL, timeout)


@pytest.fixture
def queue(convex: ConvexHttp) -> Queue:
    return Queue(convex)


@pytest.fixture
def agents(tmp_path: Path, backend: LocalConvex) -> Iterator[Callable[..., Agent]]:
    """Factory: agents(name="a", **settings) starts an agent; all are stopped at the end."""
    started: list[Agent] = []

    def start(name: str = "agent", env: dict[str, str] | None = None, **settings: Any) -> Agent:
        agent = Agent(tmp_path, backend.url, TOKEN, name=name, **settings).start(env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop(timeout=10)
