"""The agent end to end against a real localconvex: a job's life, progress, results, failures."""

from __future__ import annotations

import pytest

from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)


def test_a_job_runs_to_completion_with_progress_and_documents(repo, queue, agents):
    job_id = queue.enqueue(repository=repo, prompt="slow:1.2")
    agent = agents()
    seen = queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"))
    assert seen["totalSteps"] == 6
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert job["result"]["documents"] == 3
    docs = queue.docs(job_id)
    assert [(d["chapterIndex"], d["slug"], d["title"]) for d in docs] == [
        (0, "index", "Course index"),
        (1, "01_first", "First chapter"),
        (2, "02_second", "Second"),
    ]
    assert "app.py" in docs[0]["content"] and not docs[0]["content"].startswith("---")
    eventually(lambda: agent.metric("fondation_agent_jobs_finished_total", 'outcome="completed"') == 1)
    status, health = agent.health()
    assert status == 200 and health["status"] == "ok"
    lines = [e for e in agent.log_events() if e.get("job_id") == job_id]
    assert any(e["event"].startswith("[PROGRESS] Step 6/6") for e in lines), "CLI output relayed with the job id"
    workspaces = [e for e in (agent.directory / "workspaces").iterdir() if not e.name.startswith(".")]
    assert not workspaces, "workspace removed"
    # Where systemd is absent the process sandbox runs the job, and says plainly what that means.
    warnings = [e["event"] for e in agent.log_events() if e.get("level") == "warning"]
    assert any(w.startswith("sandbox = process isolates nothing") for w in warnings), warnings


def test_a_crashing_cli_is_retried_then_fails_with_the_stderr_tail(repo, queue, agents):
    job_id = queue.enqueue(repository=repo, prompt="crash", maxAttempts=1)
    agents()
    job = queue.wait_finished(job_id)
    assert job["status"] == "failed"
    assert job["errorKind"] == "cli_failed"
    assert "exited with status 3" in job["error"]
    assert "the model refused to cooperate" in job["error"]


def test_a_job_that_fails_once_succeeds_on_retry_with_one_set_of_docs(repo, queue, agents):
    job_id = queue.enqueue(repository=repo, prompt="fail-first")
    agents()
    job = queue.wait_finished(job_id, timeout=60)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert len(queue.docs(job_id)) == 3
