"""The agent's reading of the queue's depth: from the wake subscription when it delivers it, else at
most every QUEUE_DEPTH_INTERVAL, into its gauges."""

import time
from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.queue.convex_api import ConvexUnavailable
from fondation_agent.worker import QUEUE_DEPTH_INTERVAL, Worker


class FakeApi:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = 0

    def queue_depth(self):
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class LiveDepth:
    """A wake subscription that delivers the depth."""

    def depth_live(self) -> bool:
        return True


def worker(tmp_path: Path, api: FakeApi, wake: str = "poll") -> Worker:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), wake=wake)
    agent = Worker(config, None, worker_token="t")
    agent.api = api
    return agent


def gauge(agent: Worker, name: str) -> float | None:
    return agent.metrics.registry.get_sample_value(f"fondation_agent_queue_{name}")


def test_reads_once_per_interval_and_sets_the_gauges(tmp_path: Path) -> None:
    due_since = time.time() - 100
    api = FakeApi({"pending": 4, "active": 2, "capped": False, "oldestPendingAvailableAt": due_since * 1000})
    agent = worker(tmp_path, api)
    agent._read_queue_depth()
    agent._read_queue_depth()  # within the interval: not asked again
    assert api.asked == 1
    assert [gauge(agent, name) for name in ("pending", "active")] == [4, 2]
    # The age is the scrape's: it grows until the next answer.
    first = gauge(agent, "oldest_pending_age_seconds")
    assert 100 <= first <= time.time() - due_since
    assert gauge(agent, "oldest_pending_age_seconds") >= first
    agent.next_depth_read -= QUEUE_DEPTH_INTERVAL
    api.answers.append({"pending": 0, "active": 0, "capped": False, "oldestPendingAvailableAt": None})
    agent._read_queue_depth()
    assert api.asked == 2 and gauge(agent, "oldest_pending_age_seconds") == 0


def test_a_job_backing_off_has_waited_nothing_yet(tmp_path: Path) -> None:
    later = (time.time() + 3600) * 1000
    agent = worker(tmp_path, FakeApi({"pending": 1, "active": 0, "capped": False, "oldestPendingAvailableAt": later}))
    agent._read_queue_depth()
    assert gauge(agent, "oldest_pending_age_seconds") == 0


def test_a_failed_read_keeps_the_last_values_and_waits_for_the_next_interval(tmp_path: Path) -> None:
    api = FakeApi({"pending": 1, "active": 0, "capped": False, "oldestPendingAvailableAt": None},
                  ConvexUnavailable("down"))
    agent = worker(tmp_path, api)
    agent._read_queue_depth()
    agent.next_depth_read -= QUEUE_DEPTH_INTERVAL
    agent._read_queue_depth()
    agent._read_queue_depth()
    assert api.asked == 2 and gauge(agent, "pending") == 1


def test_no_read_while_the_subscription_delivers_the_depth(tmp_path: Path) -> None:
    api = FakeApi()
    agent = worker(tmp_path, api, wake="subscription")
    agent.wake = LiveDepth()
    agent._read_queue_depth()
    assert api.asked == 0
    agent.metrics.set_queue_depth({"pending": 3, "active": 1, "capped": False, "oldestPendingAvailableAt": None})
    assert [gauge(agent, name) for name in ("pending", "active")] == [3, 1]
