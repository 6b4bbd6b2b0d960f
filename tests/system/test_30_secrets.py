"""A hostile CLI, running as the job user, cannot get at the worker token."""

from __future__ import annotations

import pytest

from tests.operator_queue import Queue, summary
from tests.system.guest import TOKEN_FILE, GuestAgent

pytestmark = pytest.mark.system


def test_the_job_user_cannot_read_the_worker_token(agent: GuestAgent, queue: Queue, worker_token: str) -> None:
    pid = agent.main_pid()
    assert agent.vm.read(TOKEN_FILE).strip() == worker_token  # it is there, for root and the service
    job_id = queue.enqueue(f"steal:{pid}")
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed", summary(job)
    docs = queue.docs(job_id)
    report = "\n".join(doc["content"] for doc in docs)
    assert "## token file" in report, report  # the CLI did run every try
    assert worker_token not in report
    for label in ("token file", "credential", "agent environ", "agent memory", "agent root", "sudo"):
        section = report.split(f"## {label}\n", 1)[1]
        assert section.startswith("DENIED"), f"{label}: {section[:500]}"
    job_uids = agent.vm.ssh("getent passwd | awk -F: '$1 ~ /^fondation-job-[0-9]+$/ {print $3}'").stdout.split()
    assert any(f"uid={uid} " in report for uid in job_uids), report  # the tries were a job user's
    # Nor did it end up in the journal through the CLI's output or anyone's log line.
    assert worker_token not in agent.vm.ssh("journalctl -b --no-pager -o cat", timeout=300).stdout
