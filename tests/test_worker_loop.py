"""The main loop's pace (fondation_agent/worker.py): it sleeps between turns in every state."""

from pathlib import Path

from fondation_agent.config import Config
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
