"""The main loop (fondation_agent/worker.py): its pace in every state, the drain's order, with
a subscription it claims when its schedule says so (tests/queue/test_claim_schedule.py), and a
metrics port someone else holds does not keep it from starting."""

import dataclasses
import socket
import time
import urllib.request
from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.job.attempt import StopReason
from fondation_agent.queue.convex_api import FunctionError
from fondation_agent.queue.rules import Status
from fondation_agent.queue.wake import UP, Due
from fondation_agent.worker import LOOP_TICK, Worker
from tests.helpers import eventually


def test_a_paused_host_with_free_slots_sleeps_a_whole_tick_instead_of_spinning(tmp_path: Path) -> None:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), host_failure_threshold=1)
    agent = Worker(config, None, worker_token="t")
    sleeps: list[float] = []
    agent._sleep = sleeps.append
    agent._read_queue_depth = lambda: None
    assert agent.host_pause.host_failure("claude_auth", "Invalid API key")
    agent.schedule.next_poll = 0.0  # a poll long due: what made a paused loop spin, flooding the watchdog
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
    """Stands in for the subscription: the loop only reads current()."""

    def __init__(self, due: Due):
        self.due = due

    def current(self) -> Due:
        return self.due


def subscribed_agent(tmp_path: Path, due: Due, claims: list) -> Worker:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), poll_interval=2.0)
    agent = Worker(config, None, worker_token="t")
    agent.schedule.wake = FakeWake(due)
    agent.preflight_passed = True  # tests/job/test_preflight.py has the preflight

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
    agent.schedule.pacing = agent.config = dataclasses.replace(agent.config, wake_jitter=0.0)
    agent.outcomes += [None, None]
    agent._claim_into_free_slots()
    agent._claim_into_free_slots()
    assert len(claims) == 1, "no second claim for the same value"
    assert agent.schedule.next_at() >= claims[0] + 2.0 * 0.8  # but one retry after poll_interval


def test_a_refused_claim_is_not_repeated_at_once(tmp_path: Path) -> None:
    claims: list[float] = []
    agent = subscribed_agent(tmp_path, Due(UP, 1, time.time() * 1000 - 1), claims)
    agent.schedule.jitter = (1, 0.0)
    agent.outcomes += [FunctionError("refused")]
    agent._claim_into_free_slots()
    agent._claim_into_free_slots()
    assert len(claims) == 1


def serves_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_an_agent_whose_metrics_port_is_taken_runs_and_listens_once_the_port_is_free(tmp_path: Path) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))  # what a job could do while the agent restarts
    port = squatter.getsockname()[1]
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), wake="poll",
                    metrics_address=f"127.0.0.1:{port}")
    agent = Worker(config, None, worker_token="t", metrics_bind_retry=(0.01, 0.05))
    ready: list[str] = []
    statuses: list[str] = []
    agent.notifier.ready, agent.notifier.status = ready.append, statuses.append
    claims: list[int] = []
    agent.api.claim = lambda lease_ms: claims.append(lease_ms)  # no job
    agent._preflight = lambda: setattr(agent, "preflight_passed", True)  # tests/job/test_preflight.py has it
    agent._read_queue_depth = lambda: None
    agent._sleep = lambda seconds: None
    try:
        agent._start_up()
        assert agent._tick() and claims, "the loop turns and claims"
        no_endpoint = f"no metrics endpoint yet (127.0.0.1:{port}: Address already in use); "
        assert ready == statuses == [f"{no_endpoint}0/1 slots busy; 0 completed, 0 failed"]
        squatter.close()
        eventually(lambda: serves_metrics(port))
        assert agent._tick()
        assert statuses[-1] == "0/1 slots busy; 0 completed, 0 failed"
    finally:
        squatter.close()
        agent._shut_down()
