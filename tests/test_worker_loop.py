"""The main loop (fondation_agent/worker.py): its pace in every state, and the drain's order."""

from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.job import StopReason
from fondation_agent.queue_rules import Status
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
