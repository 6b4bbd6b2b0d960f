"""The main loop (fondation_agent/worker.py): its pace in every state, the drain's order, and with
a subscription it claims when the value says so, once per value."""

import dataclasses
import time
from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.convex_api import FunctionError
from fondation_agent.job import StopReason
from fondation_agent.queue_rules import Status
from fondation_agent.wake import DOWN, UP, Due
from fondation_agent.worker import LOOP_TICK, Worker


def test_a_paused_host_with_free_slots_sleeps_a_whole_tick_instead_of_spinning(tmp_path: Path) -> None:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), host_failure_threshold=1)
    agent = Worker(config, None, worker_token="t")
    sleeps: list[float] = []
    agent._sleep = sleeps.append
    agent._read_queue_depth = lambda: None
    assert agent.host_pause.host_failure("claude_auth", "Invalid API key")
    agent.next_poll = 0.0  # a poll long due: what made a paused loop spin, flooding the watchdog
    assert agent._tick() and agent._tick()
    assert sleeps == [LOOP_TICK, LOOP_TICK]


class FakeJob:
    """A running job the drain waits for: `stop` records the reason; ending it frees its slot."""

    status = Status.ANALYZING

    def __init__(self, agent: Worker, events: list):
        self.agent, self.events = agent, events
        agent.jobs["job1"] = (self, None)

    def stop(self, reason: StopReason) -> None:
        self.events.append(("stop", reason))
        self.end()

    def end(self) -> None:
        self.agent.jobs.pop("job1", None)


def draining_agent(tmp_path: Path, drain_timeout: float, during_wait) -> tuple[Worker, list]:
    """An agent with one running job; `during_wait(job)` is what happens while the drain waits."""
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), drain_timeout=drain_timeout)
    agent = Worker(config, None, worker_token="t")
    events: list = []
    job = FakeJob(agent, events)
    agent.notifier.stopping = lambda extend_timeout_s: events.append("stopping")
    agent._sleep = lambda seconds: (events.append("wait"), during_wait(agent, job))
    return agent, events


def test_a_drain_lets_running_jobs_finish(tmp_path: Path):
    agent, events = draining_agent(tmp_path, 300, lambda agent, job: job.end())
    agent._drain()
    assert events == ["stopping", "wait"] and not agent.jobs


def test_a_drain_releases_what_still_runs_at_drain_timeout(tmp_path: Path):
    agent, events = draining_agent(tmp_path, 0, lambda agent, job: None)
    agent._drain()
    assert events == ["stopping", "wait", ("stop", StopReason.RELEASED)] and not agent.jobs


def test_a_second_stop_signal_releases_at_once(tmp_path: Path):
    agent, events = draining_agent(tmp_path, 300, lambda agent, job: setattr(agent, "release_now", True))
    agent._drain()
    assert events == ["stopping", "wait", ("stop", StopReason.RELEASED)] and not agent.jobs


class FakeWake:
    """Stands in for the subscription: the worker only reads current()."""

    def __init__(self, due: Due):
        self.due = due

    def current(self) -> Due:
        return self.due


def subscribed_agent(tmp_path: Path, due: Due, claims: list) -> Worker:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), poll_interval=2.0)
    agent = Worker(config, None, worker_token="t")
    agent.wake = FakeWake(due)

    def claim(_lease_ms):
        claims.append(time.monotonic())
        outcome = claims_outcome.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    claims_outcome: list = []
    agent.api.claim = claim
    agent.outcomes = claims_outcome
    return agent


def test_a_value_said_due_is_claimed_for_once_then_retried_only_after_poll_interval(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(UP, 1, time.time() * 1000 - 1), claims)
    agent.config = dataclasses.replace(agent.config, wake_jitter=0.0)
    agent.outcomes += [None, None]
    agent._claim_into_free_slots()
    agent._claim_into_free_slots()
    assert len(claims) == 1, "no second claim for the same value"
    assert agent._claim_at() >= claims[0] + 2.0 * 0.8  # but one retry after poll_interval


def test_a_lost_race_widens_the_herd_delay_and_a_new_value_is_claimed_for(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(UP, 1, time.time() * 1000 - 1), claims)
    agent.outcomes += [None]
    agent.jitter = (1, 0.0)
    agent._claim_into_free_slots()
    assert agent.herd.spread == 2 * agent.config.wake_jitter
    agent.wake.due = Due(UP, 2, time.time() * 1000 - 1)
    agent.jitter = (2, 0.0)
    agent.outcomes += [None]
    agent._claim_into_free_slots()
    assert len(claims) == 2


def test_a_future_due_time_is_when_to_claim_and_nothing_due_is_the_safety_poll(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(UP, 1, time.time() * 1000 + 30_000), claims)
    agent.last_claim_at = time.monotonic()  # the claim every agent makes at start
    at = agent._claim_at() - time.monotonic()
    assert 29 < at < 30 + agent.config.wake_jitter + 1
    agent.wake.due = Due(UP, 2, None)
    assert agent._claim_at() == agent.last_claim_at + agent.config.safety_poll_interval


def test_while_the_subscription_is_not_up_the_agent_polls(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(DOWN, 3, None), claims)
    agent.next_poll = 12345.0
    assert agent._claim_at() == 12345.0


def test_a_refused_claim_is_not_repeated_at_once(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(UP, 1, time.time() * 1000 - 1), claims)
    agent.jitter = (1, 0.0)
    agent.outcomes += [FunctionError("refused")]
    agent._claim_into_free_slots()
    agent._claim_into_free_slots()
    assert len(claims) == 1
