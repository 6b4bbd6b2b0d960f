"""/health's verdict (fondation_agent/worker.py): the main loop alive and Convex not silent for too long."""

import time
from pathlib import Path

from fondation_agent.config import Config
from fondation_agent.worker import Worker


def worker(tmp_path: Path, silence: float) -> Worker:
    config = Config(convex_url="http://127.0.0.1:9", worker_id="w", temp_dir=str(tmp_path), health_max_silence=silence)
    return Worker(config, None, worker_token="t")


def test_unhealthy_until_convex_has_answered_once(tmp_path: Path) -> None:
    agent = worker(tmp_path, silence=60.0)
    assert agent.health()[0] is False
    agent._observe_call("worker:claim", 0.01, "ok")
    healthy, body = agent.health()
    assert healthy and body["status"] == "ok" and body["convex_reachable"] is True


def test_one_failed_call_after_a_success_is_not_an_outage(tmp_path: Path) -> None:
    agent = worker(tmp_path, silence=60.0)
    agent._observe_call("worker:claim", 0.01, "ok")
    agent._observe_call("worker:heartbeat", 0.01, "unavailable")  # e.g. a keep-alive connection closed under us
    healthy, body = agent.health()
    assert healthy
    assert body["convex_reachable"] is False  # still reported, for whoever looks


def test_unhealthy_once_convex_has_been_silent_for_health_max_silence(tmp_path: Path) -> None:
    agent = worker(tmp_path, silence=0.3)
    agent._observe_call("worker:claim", 0.01, "ok")
    assert agent.health()[0]
    agent._observe_call("worker:heartbeat", 0.01, "unavailable")
    time.sleep(0.4)
    healthy, body = agent.health()
    assert not healthy and body["status"] == "unhealthy"
    agent._observe_call("worker:heartbeat", 0.01, "ok")
    assert agent.health()[0]



def test_refused_calls_only_are_unhealthy_too(tmp_path: Path) -> None:
    """Convex answering "unauthorized" to everything is no working agent (a wrong worker token, say)."""
    agent = worker(tmp_path, silence=60.0)
    agent._observe_call("worker:claim", 0.01, "error")
    assert agent.health()[0] is False
