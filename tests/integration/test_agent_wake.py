"""Waking on change (fondation_agent/queue/wake.py) against a real localconvex: the agent learns of jobs
through its subscription to worker:nextDue, falls back to polling while Convex is away, and makes
no calls while idle but its slow safety poll.

Polling is made slow here (poll_interval 30 s) so that what happens quickly can only have come
through the subscription; the checks count calls, they never time anything.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import eventually
from tests.integration.conftest import TOKEN

pytestmark = pytest.mark.timeout(180)

CLAIMS = ("fondation_agent_convex_calls_total", 'function="worker:claim",outcome="ok"')


def subscription_state(agent) -> str | None:
    return agent.health()[1]["wake_subscription"]


def log_events(agent, prefix: str) -> list[dict]:
    return [e for e in agent.log_events() if e.get("event", "").startswith(prefix)]


def test_an_idle_agent_claims_a_queued_job_through_its_subscription(repo, queue, agents):
    agent = agents(poll_interval=30.0)
    eventually(lambda: subscription_state(agent) == "up", timeout=30)
    assert agent.metric("fondation_agent_wake_subscription", 'state="up"') == 1
    before = agent.metric(*CLAIMS)
    job_id = queue.enqueue(repository=repo)
    # Well before the next poll (24 s at the earliest): only the subscription can have said so.
    job = queue.wait_for(job_id, lambda job: job["status"] != "pending", timeout=20)
    assert job["leaseOwner"] == "agent"
    assert queue.wait_finished(job_id)["status"] == "completed"
    # One claim for the job, at most one more once its slot was free again.
    assert agent.metric(*CLAIMS) - before <= 2
    assert agent.health()[1]["wake"] == "subscription"


def test_a_retry_is_claimed_when_its_backoff_ends_not_at_a_poll(repo, queue, agents):
    agent = agents(poll_interval=30.0)
    eventually(lambda: subscription_state(agent) == "up", timeout=30)
    job_id = queue.enqueue(repository=repo, prompt="fail-first")
    job = queue.wait_finished(job_id, timeout=40)  # backoff: at most 5 s, then the subscription's timer
    assert job["status"] == "completed" and job["attempts"] == 2
    assert agent.metric(*CLAIMS) <= 5


def test_an_idle_agent_does_not_poll(repo, queue, agents):
    # A polling agent at 0.2 s would claim ~20 times in the 4 s below.
    agent = agents(poll_interval=0.2)
    eventually(lambda: subscription_state(agent) == "up", timeout=30)
    before = agent.metric(*CLAIMS)
    time.sleep(4)
    assert agent.metric(*CLAIMS) - before <= 1


def test_wake_poll_polls_as_before(repo, queue, agents):
    agent = agents(wake="poll", poll_interval=0.2)
    assert agent.health()[1]["wake_subscription"] is None
    eventually(lambda: agent.metric(*CLAIMS) >= 5)
    job_id = queue.enqueue(repository=repo)
    assert queue.wait_finished(job_id)["status"] == "completed"


def test_the_agent_polls_while_convex_is_away_and_subscribes_again_after(repo, queue, agents, backend):
    agent = agents(poll_interval=0.5, safety_poll_interval=2.0)
    eventually(lambda: subscription_state(agent) == "up", timeout=30)
    backend.stop()
    # The safety poll finds Convex unreachable: the subscription counts as down, the agent polls.
    eventually(lambda: subscription_state(agent) == "down", timeout=30)
    assert log_events(agent, "wake subscription down")
    backend.start()  # same port, state and timestamp restored
    job_id = queue.enqueue(repository=repo)
    assert queue.wait_finished(job_id)["status"] == "completed"
    # The client reconnects by itself; its first value puts the agent back on the subscription.
    eventually(lambda: subscription_state(agent) == "up", timeout=60)
    assert len(log_events(agent, "wake subscription up")) == 2
    second = queue.enqueue(repository=repo)
    assert queue.wait_finished(second)["status"] == "completed"


def test_the_worker_token_stays_out_of_logs_and_argv(repo, queue, agents):
    agent = agents(poll_interval=30.0)
    eventually(lambda: subscription_state(agent) == "up", timeout=30)
    job_id = queue.enqueue(repository=repo)
    assert queue.wait_finished(job_id)["status"] == "completed"
    assert TOKEN not in agent.log_text()
    assert TOKEN not in " ".join(agent.proc.args)
