"""Fixtures of the integration tests: a real localconvex backend over HTTP, real git repositories,
real agents; and, after every test, no process it started left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.queue.convex_api import ConvexHttp
from localconvex.launcher import LocalConvex
from tests.git_repos import make_git_repo
from tests.integration.agent import Agent
from tests.integration.cli_processes import job_processes
from tests.operator_queue import Queue

TOKEN = "test-worker-token"


@pytest.fixture(autouse=True)
def no_stray_processes(tmp_path: Path):
    """Kills what a failed test may leave (an orphaned CLI of a killed agent)."""
    yield
    for pid in job_processes(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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
