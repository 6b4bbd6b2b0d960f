"""The agent's maximum output (max_docs = 500 documents, max_output_bytes = 50 MiB: the defaults) as one
job, against localconvex holding every call to Convex's limits: the job completes, every document is kept."""

from __future__ import annotations

import pytest
import requests

from fondation_agent.config import Config

pytestmark = pytest.mark.timeout(600)


def test_a_job_with_the_agents_maximum_output_completes_within_convexs_limits(repo, queue, agents, backend):
    assert (Config.max_docs, Config.max_output_bytes) == (500, 50 * 1024**2), "the agent's defaults, which it runs with"
    job_id = queue.enqueue(repository=repo, prompt="max-output")
    agents()
    job = queue.wait_completed(job_id, timeout=500)
    assert job["result"]["documents"] == 500
    docs = queue.docs(job_id)
    assert len(docs) == 500
    total = sum(len(doc["content"].encode()) for doc in docs)
    assert 49_000_000 < total <= 50 * 1024**2, total
    usage = requests.get(f"{backend.url}/_localconvex/usage", timeout=10).json()
    assert usage["limitErrors"] == 0, usage
    # The documents were written once (saveDocs) and read back in pages, each call within the limits.
    save = usage["functions"]["worker:saveDocs"]
    assert save["calls"] >= 12 and save["maxBytesRead"] < 16 * 1024**2, save
