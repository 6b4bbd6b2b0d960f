"""The operator's side of the queue (operator:*, with the admin key) and waiting for jobs: the one
queue helper of the integration tests (a local localconvex) and the VM tier (the host's localconvex)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fondation_agent.queue.convex_api import ConvexHttp, operator_docs
from fondation_agent.queue.rules import FINISHED_STATUSES, Status


def summary(job: dict) -> str:
    """A job's outcome in one line, for assertion messages (pytest cuts long dicts)."""
    return (f"job {job.get('_id')}: {job.get('status')} after {job.get('attempts')} attempt(s), "
            f"errorKind={job.get('errorKind')!r}, error={job.get('error')!r}, progress={job.get('progress')!r}")


class Queue:
    """`repository`: what enqueue() queues unless told otherwise; `timeout` and `poll`: how long and how
    often the wait_* methods look (the VM tier's TCG guest is slow)."""

    def __init__(self, client: ConvexHttp, *, repository: str | None = None, timeout: float = 60, poll: float = 0.1):
        self.client = client
        self.repository = repository
        self.timeout = timeout
        self.poll = poll

    def enqueue(self, prompt: str = "succeed", *, repository: str | Path | None = None, **extra: Any) -> str:
        url = str(repository or self.repository)
        return self.client.mutation("operator:enqueue", {"repositoryUrl": url, "prompt": prompt, **extra})

    def get(self, job_id: str) -> dict:
        return self.client.query("operator:get", {"jobId": job_id})

    def docs(self, job_id: str) -> list[dict]:
        return operator_docs(self.client, job_id)

    def logs(self, job_id: str) -> list[dict]:
        """The job's live logs: the tail of its CLI's lines, oldest first ({level, text})."""
        return self.client.query("operator:logs", {"jobId": job_id})

    def wait_for(self, job_id: str, predicate: Callable[[dict], bool], timeout: float | None = None) -> dict:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while not predicate(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not reach the expected state in {timeout} s: {job}")
            time.sleep(self.poll)
            job = self.get(job_id)
        return job

    def wait_finished(self, job_id: str, timeout: float | None = None) -> dict:
        return self.wait_for(job_id, lambda job: job["status"] in FINISHED_STATUSES, timeout)

    def wait_completed(self, job_id: str, timeout: float | None = None) -> dict:
        job = self.wait_finished(job_id, timeout)
        assert job["status"] == Status.COMPLETED, summary(job)
        return job
