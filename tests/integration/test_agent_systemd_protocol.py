"""The agent speaks sd_notify to whatever NOTIFY_SOCKET names, and its jobs never inherit it."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


class NotifySocket:
    """A stand-in for systemd's notification socket: collects the datagrams the agent sends."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                return self.messages

    def seen(self, prefix: str) -> list[str]:
        return [m for m in self.drain() if any(line.startswith(prefix) for line in m.splitlines())]


def test_ready_watchdog_status_reload_and_stopping(tmp_path, repo, queue, agents):
    notify = NotifySocket(tmp_path / "notify.sock")
    environment = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "5000000"}
    agent = agents(env=environment)
    ready = eventually(lambda: notify.seen("READY=1"))
    assert "STATUS=0/1 slots busy" in ready[0]
    eventually(lambda: len(notify.seen("WATCHDOG=1")) >= 2, timeout=10)

    job_id = queue.enqueue(repository=repo, prompt="pid-file,hang")
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing")
    eventually(lambda: any(job_id in m for m in notify.seen("STATUS=1/1 slots busy")))
    pid = int(eventually(lambda: (agent.state / f"{job_id}.pid").exists() and
                         (agent.state / f"{job_id}.pid").read_text()))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CONVEX_URL"}, names
    assert "CLAUDE_OUTPUT_DIR" in names and "FONDATION_JOB_ID" in names

    agent.signal(signal.SIGHUP)
    eventually(lambda: notify.seen("RELOADING=1"))
    queue.client.mutation("operator:cancel", {"jobId": job_id})
    assert queue.wait_finished(job_id)["status"] == "canceled"

    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    stopping = notify.seen("STOPPING=1")
    assert stopping, notify.messages[-5:]


def test_without_notify_socket_nothing_breaks(repo, queue, agents):
    agents()
    job_id = queue.enqueue(repository=repo)
    assert queue.wait_finished(job_id)["status"] == "completed"
    time.sleep(0.2)
