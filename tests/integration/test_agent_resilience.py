"""The agent against crashes, pauses and outages: real agent processes, a real localconvex, real signals.

What these prove: a job is never lost (an agent killed or paused mid-job, Convex down for longer
than a lease) and never written twice (the fencing token refuses a paused agent that wakes up
after another took its job over); nothing is left behind (workspaces, CLI processes) after many
mixed jobs or after a crash; a CLI flooding its stdout stalls neither its job nor the agent.

The fake CLI's environment differs per agent (`FAKE_CLI_TAG` is written into every document,
`FAKE_CLI_SLOW` sets how long a `slow:` job takes), so a test can tell which agent wrote a job's
documents and make one agent slow and the other fast on the very same job.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from fondation_agent.job.cli_contract import STEPS
from fondation_agent.queue.convex_api import FunctionError
from fondation_agent.queue.rules import ACTIVE_STATUSES, FINISHED_STATUSES
from tests.helpers import eventually
from tests.integration.cli_processes import (
    alive,
    cli_env,
    cli_pids,
    cli_printed,
    job_processes,
    workspaces,
)

pytestmark = pytest.mark.timeout(300)

EXPECTED_SLUGS = ["index", "01_first", "02_second"]


# ---- helpers ------------------------------------------------------------------------------------


def stored_docs(backend, job_id: str) -> list[dict]:
    """Every doc row of a job in the backend's state file, including other attempts' staged ones."""
    state = json.loads(Path(backend.state_file).read_text())
    tables = state["components"]["fondationQueue"]["tables"]  # the queue component's database
    return [doc for doc in tables.get("docs", []) if doc["jobId"] == job_id]


def assert_docs_written_once_by(queue, backend, job_id: str, tag: str) -> None:
    docs = queue.docs(job_id)
    assert sorted(d["slug"] for d in docs) == sorted(EXPECTED_SLUGS), docs
    for doc in docs:
        assert doc["content"].rstrip().endswith(f"written by {tag}"), doc
    # The state file is written by group commit, a moment after the mutation answered.
    eventually(lambda: sorted(d["slug"] for d in stored_docs(backend, job_id)) == sorted(EXPECTED_SLUGS),
               timeout=15)


def running_cli(queue, agent, job_id: str, timeout: float = 60) -> int:
    """Waits until the job's CLI runs under `agent` and printed its first line; returns the CLI's pid."""
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep")
                   and job.get("leaseOwner") == agent.settings["worker_id"], timeout)
    cli_printed(agent, job_id)
    return eventually(lambda: cli_pids(agent, job_id) and cli_pids(agent, job_id)[0])




def events(agent, **fields) -> list[dict]:
    return [e for e in agent.log_events() if all(e.get(k) == v for k, v in fields.items())]


# ---- 1. kill -9 mid-job ----------------------------------------------------------------------------


def test_a_job_whose_agent_is_killed_is_finished_by_another_once_the_lease_expires(
    repo, queue, agents, backend, tmp_path
):
    job_id = queue.enqueue(repository=repo, prompt="slow:1,pid-file")
    first = agents("a", cli_env=cli_env(tmp_path, "a", FAKE_CLI_SLOW="600"))
    cli = running_cli(queue, first, job_id)

    first.kill()
    # The whole service dies in production (systemd kills the unit's cgroup); the process sandbox's
    # CLI would otherwise live on as an orphan until its next write to the closed pipe.
    os.killpg(cli, signal.SIGKILL)
    still_leased = queue.get(job_id)
    assert still_leased["status"] in ACTIVE_STATUSES and still_leased["leaseOwner"] == "a"

    agents("b", cli_env=cli_env(tmp_path, "b", FAKE_CLI_SLOW="1"))
    job = queue.wait_finished(job_id, timeout=90)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert job["result"]["worker"] == "b" and job["result"]["attempt"] == 2
    assert_docs_written_once_by(queue, backend, job_id, "b")


# ---- 2. SIGSTOP past the lease, SIGCONT after another agent took over --------------------------------


@pytest.mark.parametrize("paused_cli", ["still_running", "finished_while_paused"])
def test_a_paused_agent_that_wakes_up_after_losing_its_lease_writes_nothing(
    repo, queue, agents, backend, tmp_path, paused_cli
):
    """A paused agent's CLI goes on (it is in its own session): either it still runs when the agent
    wakes up (it must be killed), or it has finished (the agent's saveDocs/complete must be refused)."""
    still_running = paused_cli == "still_running"
    job_id = queue.enqueue(repository=repo, prompt="slow:1,pid-file")
    first = agents("a", cli_env=cli_env(tmp_path, "a", FAKE_CLI_SLOW="600" if still_running else "2"))
    first_cli = running_cli(queue, first, job_id)

    first.signal(signal.SIGSTOP)
    try:
        second = agents("b", cli_env=cli_env(tmp_path, "b", FAKE_CLI_SLOW="1" if still_running else "8"))
        if still_running:
            # The second agent takes the job over and completes it while the first one sleeps.
            job = queue.wait_finished(job_id, timeout=90)
            assert job["status"] == "completed" and job["result"]["worker"] == "b", job
            assert alive(first_cli), "the paused agent's CLI runs on"
        else:
            running_cli(queue, second, job_id)  # the second agent is mid-way
            eventually(lambda: not alive(first_cli), timeout=30)  # the first one's CLI succeeded meanwhile
            assert queue.get(job_id)["status"] in ACTIVE_STATUSES
    finally:
        first.signal(signal.SIGCONT)

    # The first agent finds out from Convex (heartbeat or saveDocs refused) and abandons the job.
    ended = eventually(lambda: events(first, event="job ended", job_id=job_id), timeout=30)
    assert ended[0]["outcome"] == "lease_lost", ended
    assert first.metric("fondation_agent_lease_losses_total") >= 1
    assert first.metric("fondation_agent_jobs_finished_total", 'outcome="lease_lost"') == 1
    if still_running:
        assert not events(first, event="stage", job_id=job_id, status="gathering"), "its CLI was stopped"
    eventually(lambda: not alive(first_cli), timeout=15)
    eventually(lambda: workspaces(first) == [], timeout=15)

    job = queue.wait_finished(job_id, timeout=90)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2 and job["result"]["worker"] == "b"
    assert_docs_written_once_by(queue, backend, job_id, "b")
    # The first agent lives on and stays healthy.
    assert first.proc.poll() is None
    eventually(lambda: first.health()[0] == 200, timeout=30)


# ---- 3. Convex down mid-job ------------------------------------------------------------------------


def test_convex_down_longer_than_the_lease_loses_no_job_and_duplicates_no_docs(repo, queue, agents, backend, tmp_path):
    job_id = queue.enqueue(repository=repo, prompt="slow:8,pid-file")
    agent = agents(cli_env=cli_env(tmp_path, "agent"))
    first_cli = running_cli(queue, agent, job_id)
    assert agent.health()[0] == 200

    backend.stop()
    outage_ends = time.monotonic() + 30
    codes = set()
    while time.monotonic() < outage_ends:
        assert agent.proc.poll() is None, f"the agent died during the outage:\n{agent.log_text()[-3000:]}"
        codes.add(agent.health()[0])
        time.sleep(0.5)
    assert 503 in codes, codes
    # The lease ran out with no Convex to renew it: the attempt was abandoned, its CLI killed.
    assert events(agent, event="lease expired while Convex was unreachable", job_id=job_id)
    assert not alive(first_cli)
    assert workspaces(agent) == []

    backend.start()  # same port, state restored from the file
    eventually(lambda: agent.health()[0] == 200, timeout=90, interval=0.5)
    job = queue.wait_finished(job_id, timeout=120)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2  # the stalled attempt counted, the retry completed
    assert_docs_written_once_by(queue, backend, job_id, "agent")
    assert agent.proc.poll() is None


def test_convex_down_shorter_than_the_lease_does_not_disturb_the_job(repo, queue, agents, backend, tmp_path):
    """Heartbeats and the final calls (saveDocs, complete) are repeated while the lease is still ours."""
    job_id = queue.enqueue(repository=repo, prompt="slow:4")
    agent = agents(cli_env=cli_env(tmp_path, "agent"), lease_time=40.0, heartbeat_interval=1.0)
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"))

    backend.stop()
    outage_ends = time.monotonic() + 10  # the CLI (4 s) ends during the outage
    codes = set()
    while time.monotonic() < outage_ends:
        codes.add(agent.health()[0])
        time.sleep(0.5)
    assert 503 in codes
    backend.start()

    job = queue.wait_finished(job_id, timeout=90)
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert_docs_written_once_by(queue, backend, job_id, "agent")
    assert events(agent, event="Convex unreachable; retrying", job_id=job_id), "the upload waited for Convex"
    assert agent.metric("fondation_agent_lease_losses_total") == 0
    eventually(lambda: agent.health()[0] == 200, timeout=60, interval=0.5)


# ---- 8. many mixed jobs, nothing left behind ---------------------------------------------------------


def test_fifty_mixed_jobs_end_terminal_and_leave_no_workspace_or_process(repo, queue, agents, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    plan = (
        [("succeed,pid-file", {}, "completed")] * 18
        + [("symlink,pid-file", {}, "completed")] * 4
        + [("fail-first,pid-file", {}, "completed")] * 5
        + [("crash,pid-file", {"maxAttempts": 1}, "failed:cli_failed")] * 6
        + [("hang,pid-file", {"maxAttempts": 1}, "failed:timeout")] * 5
        + [("huge,pid-file", {}, "failed:invalid_output")] * 4
        + [("hang", {}, "cancel-pending")] * 2
        + [("hang,pid-file", {}, "cancel-running")] * 3
        + [("ignore-term,pid-file", {}, "cancel-running")] * 3
    )
    assert len(plan) == 50
    random.Random(7).shuffle(plan)  # noqa: S311 - a test's order
    jobs = {queue.enqueue(repository=repo, prompt=prompt, **extra): expected for prompt, extra, expected in plan}
    for job_id, expected in jobs.items():
        if expected == "cancel-pending":
            assert queue.client.mutation("operator:cancel", {"jobId": job_id}) == {"status": "canceled"}

    settings = {"job_timeout": 8.0, "kill_grace": 1.0}  # ample for the jobs that do not hang
    started = [
        agents(name, concurrency=concurrency, cli_env=cli_env(tmp_path, name, FAKE_CLI_SECRET=str(secret)), **settings)
        for name, concurrency in (("a", 2), ("b", 4))
    ]

    deadline = time.monotonic() + 240
    while True:
        listed = {job["_id"]: job for job in queue.client.query("operator:list", {"limit": 100})}
        if all(listed[job_id]["status"] in FINISHED_STATUSES for job_id in jobs):
            break
        unfinished = {job_id: listed[job_id]["status"] for job_id in jobs
                      if listed[job_id]["status"] not in FINISHED_STATUSES}
        assert time.monotonic() < deadline, unfinished
        for job_id, expected in jobs.items():
            job = listed[job_id]
            # Cancel once running; a job that timed out meanwhile waits for its retry: cancel it there.
            if expected == "cancel-running" and (
                (job["status"] in ACTIVE_STATUSES and not job.get("cancelRequested"))
                or (job["status"] == "pending" and job["attempts"] > 0)
            ):
                with contextlib.suppress(FunctionError):
                    queue.client.mutation("operator:cancel", {"jobId": job_id})
        time.sleep(0.3)

    outcomes = {}
    for job_id, expected in jobs.items():
        job = queue.get(job_id)
        got = job["status"] + (f":{job['errorKind']}" if job["status"] == "failed" else "")
        want = "canceled" if expected.startswith("cancel") else expected
        outcomes[job_id] = (want, got)
        if got == "completed":
            docs = queue.docs(job_id)
            assert sorted(d["slug"] for d in docs) == sorted(EXPECTED_SLUGS), (job, docs)
            assert not any("top secret" in d["content"] for d in docs)
    assert all(want == got for want, got in outcomes.values()), {j: o for j, o in outcomes.items() if o[0] != o[1]}

    for agent in started:
        eventually(lambda agent=agent: workspaces(agent) == [], timeout=30)
        assert agent.proc.poll() is None
        assert agent.health()[0] == 200
        for job_id in jobs:
            for pid in cli_pids(agent, job_id):
                assert not alive(pid), (job_id, pid)
    assert job_processes(tmp_path) == []


# ---- 9. a crashed run's workspace -------------------------------------------------------------------


def test_a_crashed_runs_workspace_is_removed_when_the_agent_starts_again(repo, queue, agents, tmp_path):
    job_id = queue.enqueue(repository=repo, prompt="hang,pid-file")
    crashed = agents("crashed", cli_env=cli_env(tmp_path, "crashed"))
    cli = running_cli(queue, crashed, job_id)
    temp_dir = Path(crashed.settings["temp_dir"])
    leftover = temp_dir / f"{job_id}-1"
    assert (leftover / "repo" / "app.py").exists()
    # Another worker's workspace in the same directory, and a stray directory: neither is ours to remove.
    foreign = temp_dir / "otherjob-1"
    foreign.mkdir()
    (foreign / ".fondation-owner").write_text("someone-else\n")
    stray = temp_dir / "not-a-workspace"
    stray.mkdir()

    crashed.kill()
    os.killpg(cli, signal.SIGKILL)  # as systemd would, with the agent's cgroup
    eventually(lambda: not alive(cli))
    assert leftover.exists()

    restarted = agents("restarted", worker_id="crashed", temp_dir=str(temp_dir),
                       cli_env=cli_env(tmp_path, "restarted"))
    assert not leftover.exists()
    removed = events(restarted, event="removed leftover workspaces")
    assert removed and removed[0]["workspaces"] == [f"{job_id}-1"], removed
    assert foreign.exists() and stray.exists()

    # The same worker takes its stalled job up again once the lease has run out; cancel it there.
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job["attempts"] == 2, timeout=60)
    queue.client.mutation("operator:cancel", {"jobId": job_id})
    assert queue.wait_finished(job_id, timeout=30)["status"] == "canceled"
    eventually(lambda: workspaces(restarted) == ["not-a-workspace", "otherjob-1"], timeout=15)


def test_a_killed_agents_cli_is_stopped_when_the_agent_starts_again(repo, queue, agents, tmp_path):
    job_id = queue.enqueue(repository=repo, prompt="hang,pid-file")
    crashed = agents("crashed", cli_env=cli_env(tmp_path, "crashed"))
    cli = running_cli(queue, crashed, job_id)
    crashed.kill()
    agents("restarted", worker_id="crashed", temp_dir=crashed.settings["temp_dir"], drain_timeout=1.0,
           cli_env=cli_env(tmp_path, "restarted"))
    eventually(lambda: not alive(cli), timeout=10)


# ---- 10. a flooding CLI --------------------------------------------------------------------------------


def test_a_cli_flooding_stdout_stalls_neither_the_job_nor_the_agent(repo, queue, agents, backend, tmp_path):
    job_id = queue.enqueue(repository=repo, prompt="flood")
    agent = agents(cli_env=cli_env(tmp_path, "agent"))  # /health: 503 after 5 s without a Convex answer
    # Past "running" (set by the claim itself), the agent has read the claim's answer: /health counts it.
    queue.wait_for(job_id, lambda job: job["status"] not in ("pending", "running"))
    codes = []
    deadline = time.monotonic() + 120
    while queue.get(job_id)["status"] not in FINISHED_STATUSES and time.monotonic() < deadline:
        codes.append(agent.health())
        time.sleep(0.5)
    assert {code for code, _ in codes} <= {200}, json.dumps([body for code, body in codes if code != 200])
    job = queue.get(job_id)
    assert job["status"] == "completed", job
    assert_docs_written_once_by(queue, backend, job_id, "agent")

    assert agent.metric("fondation_agent_cli_output_lines_total") >= 200_000
    relayed = events(agent, job_id=job_id, stream="stdout")
    assert len(relayed) == 5000 + 5, len(relayed)
    assert [e["event"] for e in relayed[5000:]] == [
        f"[PROGRESS] Step {n}/6: {text}" for n, text in enumerate(STEPS[1:], 2)
    ], "past the cap, only the lines that reach a new step (the repeated step 1 does not)"
    assert any("more than 5000 lines of CLI output" in e["event"] for e in events(agent, job_id=job_id))
