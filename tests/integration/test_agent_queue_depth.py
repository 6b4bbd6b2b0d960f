"""The queue's depth (worker:queueDepth) as every agent exports it: what waits, since when, what runs."""

from __future__ import annotations

import time

import pytest

from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


def test_an_agent_exports_how_many_jobs_wait_since_when_and_how_many_run(repo, queue, agents):
    # Queued before the agent starts: its first turn claims one (one slot), then reads the depth.
    for _ in range(3):
        queue.enqueue(repository=repo, prompt="hang")
    enqueued_at = time.time()
    agent = agents(concurrency=1)
    eventually(lambda: agent.metric("fondation_agent_queue_active") == 1)
    assert agent.metric("fondation_agent_queue_pending") == 2
    assert 0 < agent.metric("fondation_agent_queue_oldest_pending_age_seconds") <= time.time() - enqueued_at + 1
    # Delivered by the wake subscription (worker:queueDepth subscribed to), not by polling it.
    assert agent.metric("fondation_agent_convex_calls_total", 'function="worker:queueDepth",outcome="ok"') == 0


def test_with_wake_poll_the_agent_reads_the_depth_itself(repo, queue, agents):
    queue.enqueue(repository=repo, prompt="hang")
    queue.enqueue(repository=repo, prompt="hang")
    agent = agents(concurrency=1, wake="poll")
    eventually(lambda: agent.metric("fondation_agent_queue_active") == 1)
    assert agent.metric("fondation_agent_queue_pending") == 1
    assert agent.metric("fondation_agent_convex_calls_total", 'function="worker:queueDepth",outcome="ok"') >= 1
