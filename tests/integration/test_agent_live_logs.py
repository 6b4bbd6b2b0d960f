"""The platform's live logs: a running job's CLI lines reach Convex with the agent's heartbeats."""

from __future__ import annotations

import pytest

from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


def test_a_running_jobs_cli_lines_appear_in_its_live_logs_as_in_the_journal(repo, queue, agents):
    job_id = queue.enqueue(repository=repo, prompt="hang")  # one step, then the CLI waits
    agent = agents()
    logs = eventually(lambda: queue.logs(job_id), timeout=30)
    assert logs == [{"level": "info", "text": "[PROGRESS] Step 1/6: Extracting abstractions"}], logs
    assert queue.get(job_id)["status"] not in ("completed", "failed", "canceled")  # seen while it runs
    journal = eventually(lambda: [e for e in agent.log_events()
                                  if e.get("job_id") == job_id and e.get("stream") == "stdout"])
    assert [(e["event"], e["level"]) for e in journal] == [(line["text"], line["level"]) for line in logs]
    queue.client.mutation("operator:cancel", {"jobId": job_id, "reason": "seen enough"})
    job = queue.wait_finished(job_id)
    assert (job["status"], job["error"]) == ("canceled", "seen enough")
