"""The agent's reading of the queue's depth: at most every QUEUE_DEPTH_INTERVAL, into its gauges."""

from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.queue.convex_api import ConvexUnavailable
from fondation_agent.worker import QUEUE_DEPTH_INTERVAL, Worker


class FakeApi:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked: list[float] = []

    def queue_depth(self, now: float):
        self.asked.append(now)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def worker(tmp_path: Path, api: FakeApi) -> Worker:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path))
    agent = Worker(config, None, worker_token="t")
    agent.api = api
    return agent


def gauge(agent: Worker, name: str) -> float | None:
    return agent.metrics.registry.get_sample_value(f"fondation_agent_queue_{name}")


def test_reads_once_per_interval_and_sets_the_gauges(tmp_path: Path) -> None:
    api = FakeApi({"pending": 4, "active": 2, "capped": True, "oldestPendingAvailableAt": 0})
    agent = worker(tmp_path, api)
    agent._read_queue_depth()
    agent._read_queue_depth()  # within the interval: not asked again
    assert len(api.asked) == 1
    assert [gauge(agent, name) for name in ("pending", "active", "counts_capped")] == [4, 2, 1]
    assert gauge(agent, "oldest_pending_age_seconds") == api.asked[0]  # due since the epoch
    agent.next_depth_read -= QUEUE_DEPTH_INTERVAL
    api.answers.append({"pending": 0, "active": 0, "capped": False, "oldestPendingAvailableAt": None})
    agent._read_queue_depth()
    assert len(api.asked) == 2 and gauge(agent, "oldest_pending_age_seconds") == 0


def test_a_failed_read_keeps_the_last_values_and_waits_for_the_next_interval(tmp_path: Path) -> None:
    api = FakeApi({"pending": 1, "active": 0, "capped": False, "oldestPendingAvailableAt": None},
                  ConvexUnavailable("down"))
    agent = worker(tmp_path, api)
    agent._read_queue_depth()
    agent.next_depth_read -= QUEUE_DEPTH_INTERVAL
    agent._read_queue_depth()
    agent._read_queue_depth()
    assert len(api.asked) == 2 and gauge(agent, "pending") == 1
