"""Signals to the agent (SIGTERM drain, a second SIGTERM/SIGINT, SIGHUP reload) and the agent's own
stopping of CLIs (cancel, job_timeout), with real agent processes, a real localconvex and real CLIs.

Process checks read /proc: a CLI's children orphaned by a kill are reaped by init, and until then
show as zombies, which count as dead here.
"""

from __future__ import annotations

import signal
import time

import pytest

from fondation_agent.queue.rules import ACTIVE_STATUSES
from tests.helpers import eventually
from tests.integration.cli_processes import (
    alive,
    cli_env,
    cli_pids,
    cli_printed,
    job_processes,
    workspaces,
)

pytestmark = pytest.mark.timeout(240)



def running_cli(queue, job_id: str, agent, count: int = 1, timeout: float = 60) -> list[int]:
    """Waits until the job's CLI runs and printed its first line; returns its pids (the CLI's, its children's)."""
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"), timeout)
    cli_printed(agent, job_id)
    return eventually(lambda: len(cli_pids(agent, job_id)) >= count and cli_pids(agent, job_id))




def events(agent, **fields) -> list[dict]:
    return [e for e in agent.log_events() if all(e.get(k) == v for k, v in fields.items())]


def statuses(queue, job_ids: list[str]) -> list[str]:
    listed = {job["_id"]: job for job in queue.client.query("operator:list", {"limit": 100})}
    return [listed[job_id]["status"] for job_id in job_ids]


# ---- SIGTERM: drain ----------------------------------------------------------------------------------


def test_sigterm_on_an_idle_agent_exits_0(agents):
    agent = agents()
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    assert events(agent, event="agent stopped")


def test_sigterm_lets_the_running_jobs_finish_and_claims_nothing_more(repo, queue, agents, tmp_path):
    agent = agents(concurrency=2, drain_timeout=60.0, cli_env=cli_env(tmp_path))
    running = [queue.enqueue(repository=repo, prompt="slow:5") for _ in range(2)]
    for job_id in running:
        queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"))
    queued_before = queue.enqueue(repository=repo, prompt="succeed")  # both slots busy: it waits

    agent.signal(signal.SIGTERM)
    eventually(lambda: agent.health()[1]["draining"])
    queued_after = queue.enqueue(repository=repo, prompt="succeed")
    # The running jobs end and free their slots; a draining agent leaves the queued jobs to others.
    assert agent.wait(timeout=90) == 0

    for job_id in running:
        job = queue.get(job_id)
        assert job["status"] == "completed" and job["attempts"] == 1, job
        assert len(queue.docs(job_id)) == 3
    for job_id in (queued_before, queued_after):
        left = queue.get(job_id)
        assert left["status"] == "pending" and left["attempts"] == 0, left
    assert events(agent, event="draining: no new jobs")
    assert len(events(agent, event="job claimed")) == 2
    assert workspaces(agent) == []


def test_sigterm_releases_a_job_still_running_at_drain_timeout(repo, queue, agents, tmp_path):
    agent = agents(drain_timeout=3.0, kill_grace=1.0, cli_env=cli_env(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt="slow:600,pid-file")
    pids = running_cli(queue, job_id, agent)

    agent.signal(signal.SIGTERM)
    time.sleep(1)  # well inside drain_timeout: the job goes on
    assert agent.proc.poll() is None
    assert queue.get(job_id)["status"] in ACTIVE_STATUSES
    assert all(alive(pid) for pid in pids)

    assert agent.wait(timeout=60) == 0
    job = queue.get(job_id)
    assert job["status"] == "pending", job
    assert job["attempts"] == 0, "a released attempt does not count"
    assert job["progress"].startswith("Released"), job
    assert not any(alive(pid) for pid in pids)
    assert workspaces(agent) == []
    ended = events(agent, event="job ended", job_id=job_id)
    assert ended and ended[0]["outcome"] == "released", ended


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_stop_signal_releases_at_once(repo, queue, agents, tmp_path, second_signal):
    agent = agents(drain_timeout=600.0, kill_grace=1.0, cli_env=cli_env(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt="slow:600,pid-file")
    pids = running_cli(queue, job_id, agent)

    agent.signal(signal.SIGTERM)
    eventually(lambda: agent.health()[1]["draining"])
    time.sleep(1)
    assert agent.proc.poll() is None and queue.get(job_id)["status"] in ACTIVE_STATUSES

    agent.signal(second_signal)
    assert agent.wait(timeout=30) == 0  # far sooner than the 600 s drain_timeout
    job = queue.get(job_id)
    assert job["status"] == "pending" and job["attempts"] == 0, job
    assert not any(alive(pid) for pid in pids)
    assert workspaces(agent) == []


def test_a_draining_agent_exits_even_when_convex_is_down_and_the_job_is_taken_up_again(
    repo, queue, agents, backend, tmp_path
):
    """The release cannot reach Convex: the agent retries while its lease may still be valid, then gives
    the job up to the lease's expiry, so that another agent (or itself, restarted) takes it up again."""
    job_id = queue.enqueue(repository=repo, prompt="slow:2,pid-file")
    first = agents("a", drain_timeout=2.0, kill_grace=1.0, cli_env=cli_env(tmp_path, "a", FAKE_CLI_SLOW="600"))
    pids = running_cli(queue, job_id, first)

    backend.stop()
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in pids)
    assert workspaces(first) == []
    ended = events(first, event="job ended", job_id=job_id)
    assert ended and ended[0]["outcome"] == "lease_lost", ended

    backend.start()
    agents("b", cli_env=cli_env(tmp_path, "b"))
    job = queue.wait_finished(job_id, timeout=90)
    assert job["status"] == "completed" and job["attempts"] == 2 and job["result"]["worker"] == "b", job
    assert len(queue.docs(job_id)) == 3


# ---- SIGHUP: reload -----------------------------------------------------------------------------------


def test_sighup_raises_the_concurrency_without_touching_the_running_job(repo, queue, agents, tmp_path):
    agent = agents(concurrency=1, cli_env=cli_env(tmp_path))
    job_ids = [queue.enqueue(repository=repo, prompt="hang,pid-file") for _ in range(4)]
    eventually(lambda: agent.health()[1]["slots_busy"] == 1, timeout=60)
    time.sleep(1.5)  # several polls: one slot, one job
    assert sorted(statuses(queue, job_ids)).count("pending") == 3
    assert agent.metric("fondation_agent_slots_total") == 1
    first_job = agent.health()[1]["jobs"][0]
    first_pid = running_cli(queue, first_job, agent)[0]

    agent.write_config(concurrency=3)
    agent.signal(signal.SIGHUP)
    eventually(lambda: agent.health()[1]["slots_busy"] == 3, timeout=60)
    assert agent.metric("fondation_agent_slots_total") == 3
    assert agent.health()[1]["slots_total"] == 3
    reloaded = events(agent, event="config reloaded")
    assert reloaded and reloaded[-1]["concurrency"] == 3
    time.sleep(1.5)  # several polls: three slots, never four
    current = statuses(queue, job_ids)
    assert sum(status in ACTIVE_STATUSES for status in current) == 3 and current.count("pending") == 1, current
    # The job that ran through the reload is the same attempt, its CLI the same process.
    assert queue.get(first_job)["attempts"] == 1
    assert alive(first_pid) and cli_pids(agent, first_job)[0] == first_pid

    # Down to one slot: the three running jobs go on, nothing more is claimed until they are gone.
    running = [job_id for job_id, status in zip(job_ids, current, strict=True) if status in ACTIVE_STATUSES]
    waiting = [job_id for job_id in job_ids if job_id not in running]
    running_pids = [cli_pids(agent, job_id)[0] for job_id in running]
    agent.write_config(concurrency=1)
    agent.signal(signal.SIGHUP)
    eventually(lambda: agent.metric("fondation_agent_slots_total") == 1)
    time.sleep(1.5)
    assert statuses(queue, waiting) == ["pending"]
    assert all(status in ACTIVE_STATUSES for status in statuses(queue, running))
    assert all(alive(pid) for pid in running_pids)
    for job_id in running:
        queue.client.mutation("operator:cancel", {"jobId": job_id})
    for job_id in running:
        assert queue.wait_finished(job_id, timeout=60)["status"] == "canceled"
    queue.wait_for(waiting[0], lambda job: job["status"] in ACTIVE_STATUSES, timeout=60)
    # Convex marks the job claimed a moment before the agent has taken it into a slot.
    eventually(lambda: agent.health()[1]["slots_busy"] == 1)
    queue.client.mutation("operator:cancel", {"jobId": waiting[0]})
    assert queue.wait_finished(waiting[0], timeout=60)["status"] == "canceled"


def test_sighup_with_an_invalid_config_keeps_the_running_one(repo, queue, agents, tmp_path):
    agent = agents(concurrency=2, cli_env=cli_env(tmp_path))
    # Healthy once its preflight passed and Convex answered (a reload runs the preflight again).
    eventually(lambda: agent.health()[0] == 200)

    agent.write_config(concurrency=0)
    agent.signal(signal.SIGHUP)
    refused = eventually(lambda: events(agent, event="reload refused; keeping the running config"))
    assert any(problem.startswith("concurrency:") for problem in refused[0]["problems"]), refused

    agent.config_path.write_text("concurrency = = 3\n")  # not even TOML
    agent.signal(signal.SIGHUP)
    eventually(lambda: len(events(agent, event="reload refused; keeping the running config")) == 2)

    assert agent.proc.poll() is None
    status, health = agent.health()
    assert status == 200 and health["slots_total"] == 2, health
    assert agent.metric("fondation_agent_slots_total") == 2
    # The old config still runs jobs, two at a time.
    job_ids = [queue.enqueue(repository=repo, prompt="slow:4") for _ in range(2)]
    eventually(lambda: agent.health()[1]["slots_busy"] == 2, timeout=60)
    for job_id in job_ids:
        assert queue.wait_finished(job_id)["status"] == "completed"


# ---- cancel and job_timeout: stopping a CLI's whole tree ---------------------------------------------


def test_cancel_kills_a_cli_that_ignores_sigterm_and_all_its_children(repo, queue, agents, tmp_path):
    agent = agents(heartbeat_interval=1.0, kill_grace=3.0, cli_env=cli_env(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt="ignore-term,pid-file")
    pids = running_cli(queue, job_id, agent, count=3)
    assert all(alive(pid) for pid in pids)

    asked = time.monotonic()
    assert queue.client.mutation("operator:cancel", {"jobId": job_id}) == {"status": "cancel_requested"}
    job = queue.wait_finished(job_id, timeout=60)
    took = time.monotonic() - asked
    assert job["status"] == "canceled", job
    # The lease keeper sees the request at its next heartbeat; SIGKILL follows kill_grace after SIGTERM.
    assert took < 15, f"cancel took {took:.1f} s (heartbeat_interval 1 s + kill_grace 3 s)"
    assert not [pid for pid in pids if alive(pid)]
    assert job_processes(tmp_path) == []
    eventually(lambda: workspaces(agent) == [])
    stopping = events(agent, event="stopping job", job_id=job_id)
    assert stopping and stopping[0]["reason"] == "canceled"
    assert agent.metric("fondation_agent_jobs_finished_total", 'outcome="canceled"') == 1


@pytest.mark.parametrize("mode", ["hang", "ignore-term"])
def test_job_timeout_stops_the_cli_and_fails_the_job(repo, queue, agents, tmp_path, mode):
    agent = agents(job_timeout=3.0, kill_grace=1.0, cli_env=cli_env(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt=f"{mode},pid-file", maxAttempts=1)
    pids = running_cli(queue, job_id, agent, count=3 if mode == "ignore-term" else 1)

    job = queue.wait_finished(job_id, timeout=60)
    assert job["status"] == "failed", job
    assert job["errorKind"] == "timeout"
    assert "job_timeout" in job["error"]
    failed = events(agent, event="job failed", job_id=job_id)
    assert failed and failed[0]["retryable"] is True, "a timeout is retryable; maxAttempts=1 ended it"
    assert not [pid for pid in pids if alive(pid)]
    assert job_processes(tmp_path) == []
    eventually(lambda: workspaces(agent) == [])


def test_a_job_that_times_out_is_retried_when_attempts_remain(repo, queue, agents, tmp_path):
    agent = agents(job_timeout=2.0, kill_grace=1.0, cli_env=cli_env(tmp_path))
    job_id = queue.enqueue(repository=repo, prompt="hang", maxAttempts=2)
    job = queue.wait_finished(job_id, timeout=60)
    assert job["status"] == "failed" and job["errorKind"] == "timeout" and job["attempts"] == 2, job
    # (The pending state between the attempts can last mere milliseconds: full jitter.)
    failures = events(agent, event="job failed", job_id=job_id)
    seen = [(f["attempt"], f["error_kind"], f["retryable"]) for f in failures]
    assert seen == [(1, "timeout", True), (2, "timeout", True)]
