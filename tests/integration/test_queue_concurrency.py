"""Acceptance check of the queue under concurrency: 8 worker processes drain 300 jobs through the HTTP API.

Each worker is a separate OS process (this module run with `python -m`, see `worker_main`) with its own
ConvexHttp + WorkerApi, talking to one real localconvex. Every claim is recorded; an attempt then
heartbeats (sometimes), stages two docs naming its lease token, and
  - usually completes, with a summary naming its lease token;
  - sometimes releases the job (eligible again at once, the attempt not counted);
  - sometimes, on a first attempt, fails retryably (eligible again after 0-5 s of backoff);
  - on each worker's ZOMBIE_CLAIM-th claim, claims with a 1 s lease, goes silent past it and then tries to
    complete: it must be refused (LeaseLost), and the stalled job is claimed again by someone.
The records must tell one consistent story: no claim handed out twice, every claim accounted for, each
job's attempts following from how its earlier claims ended, every job completed exactly once, and its
result and documents written by the attempt that completed it.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.queue.convex_api import Claim, ConvexHttp, LeaseLost, WorkerApi, operator_docs

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
JOBS = 300
MAX_ATTEMPTS = 10  # room for a retryable failure plus lease expiries; no job should ever reach it
LEASE_MS = 60_000  # ordinary attempts: far longer than anything here takes, even on a loaded box
ZOMBIE_LEASE_MS = 1_000
ZOMBIE_SLEEP = 1.6  # seconds: past the 1 s lease
ZOMBIE_CLAIM = 4  # each worker's 4th claim is a zombie
P_HEARTBEAT = 0.3
P_RELEASE = 0.07
P_FAIL_FIRST_ATTEMPT = 0.06
WORKER_DEADLINE = 300.0  # a worker gives up on its own after this long, whatever happens
DRAIN_TIMEOUT = 240.0
DOC_SLUGS = ("index", "chapter-1")


# ------------------------------------------------------------------------------------------ the worker process


def run_attempt(api: WorkerApi, claim: Claim, rng: random.Random, zombie: bool) -> dict[str, Any]:
    """One attempt at a claimed job; returns how it ended."""
    if rng.random() < P_HEARTBEAT:
        canceled = api.heartbeat(claim, ZOMBIE_LEASE_MS if zombie else LEASE_MS, status="analyzing",
                                 progress="Step 1/6: extract abstractions", currentStep=1, totalSteps=6)
        assert canceled is False
    content = f"lease {claim.lease_token} by {api.worker_id}"
    api.save_docs(claim, [
        {"title": slug, "slug": slug, "kind": "chapter", "chapterIndex": index, "content": content}
        for index, slug in enumerate(DOC_SLUGS)
    ])
    summary = {"leaseToken": claim.lease_token, "workerId": api.worker_id, "attempt": claim.attempt}
    if zombie:
        time.sleep(ZOMBIE_SLEEP)
        try:
            api.complete(claim, summary)
        except LeaseLost:
            return {"outcome": "lease_lost"}
        return {"outcome": "zombie_completed"}
    roll = rng.random()
    if roll < P_RELEASE:
        api.release(claim, "test: releasing")
        return {"outcome": "released"}
    if claim.attempt == 1 and roll < P_RELEASE + P_FAIL_FIRST_ATTEMPT:
        answer = api.fail(claim, "test: transient failure", "test_transient", retryable=True)
        return {"outcome": "failed", "willRetry": answer["willRetry"]}
    api.complete(claim, summary)
    return {"outcome": "completed"}


def worker_main(url: str, token: str, worker_id: str, out_path: str, stop_path: str) -> None:
    """Claims until the stop file exists (the test saw every job finish, or gave up); writes its records as JSON."""
    rng = random.Random(f"{worker_id}-{os.getpid()}")  # noqa: S311 - test randomness
    api = WorkerApi(ConvexHttp(url, read_timeout=60, retries=2), token, worker_id)
    records: list[dict[str, Any]] = []
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every worker starts at once
    deadline = time.monotonic() + WORKER_DEADLINE
    try:
        while time.monotonic() < deadline and not os.path.exists(stop_path):
            zombie = len(records) + 1 == ZOMBIE_CLAIM
            claim = api.claim(ZOMBIE_LEASE_MS if zombie else LEASE_MS)
            if claim is None:
                time.sleep(rng.uniform(0.02, 0.1))
                continue
            record: dict[str, Any] = {
                "jobId": claim.job_id,
                "attempt": claim.attempt,
                "leaseToken": claim.lease_token,
                "workerId": worker_id,
                "claimNumber": int(claim.job["claims"]),
                "zombie": zombie,
                "claimedAt": time.monotonic(),
            }
            records.append(record)
            try:
                record.update(run_attempt(api, claim, rng, zombie))
            except LeaseLost as error:
                record["outcome"] = f"unexpected lease_lost: {error}"
            except Exception as error:  # recorded: the test fails on it
                record["outcome"] = f"error: {error!r}"
            record["endedAt"] = time.monotonic()
    finally:
        Path(out_path).write_text(json.dumps(records))
        api.http.close()


# ------------------------------------------------------------------------------------------ the test


def start_workers(url: str, token: str, directory: Path, workers: list[subprocess.Popen[str]]) -> None:
    for index in range(WORKERS):
        worker_id = f"worker-{index}"
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_queue_concurrency", url, token, worker_id,
             str(directory / f"{worker_id}.json"), str(directory / "stop")],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ))
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", "the worker process started"
    for worker in workers:  # all loaded and connected: let them go together
        worker.stdin.write("go\n")
        worker.stdin.flush()


def wait_drained(client: ConvexHttp) -> dict[str, float]:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        counts = client.query("operator:stats", {})["counts"]
        finished = counts["completed"] + counts["failed"] + counts["canceled"]
        if finished == JOBS or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_eight_processes_drain_300_jobs_each_claim_once(backend, convex: ConvexHttp, tmp_path: Path) -> None:
    job_ids = [
        convex.mutation("operator:enqueue", {
            "repositoryUrl": f"https://github.com/example/repo-{i}", "prompt": "p", "maxAttempts": MAX_ATTEMPTS,
        })
        for i in range(JOBS)
    ]
    assert len(set(job_ids)) == JOBS

    workers: list[subprocess.Popen[str]] = []
    try:
        start_workers(backend.url, backend.token, tmp_path, workers)
        counts = wait_drained(convex)
        (tmp_path / "stop").touch()
        for worker in workers:
            assert worker.wait(timeout=120) == 0, "a worker process failed"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    records = [r for w in range(WORKERS) for r in json.loads((tmp_path / f"worker-{w}.json").read_text())]
    outcomes = collections.Counter(r["outcome"] for r in records)
    print(f"claims: {len(records)}, endings: {dict(outcomes)}")
    assert set(outcomes) <= {"completed", "released", "failed", "lease_lost"}, outcomes

    # Every job finished, and completed; nothing is left pending or active; jobs:stats says the same.
    assert counts == {"pending": 0, "running": 0, "cloning": 0, "analyzing": 0, "gathering": 0,
                      "completed": JOBS, "failed": 0, "canceled": 0}, (counts, outcomes)
    assert convex.query("operator:stats", {}) == {"counts": counts, "capped": []}

    # No claim was handed out twice: lease tokens are unique, and so is each job's claim number.
    tokens = [r["leaseToken"] for r in records]
    assert len(set(tokens)) == len(tokens), "a lease token was handed out twice"
    by_job: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for record in records:
        by_job[record["jobId"]].append(record)
    assert set(by_job) == set(job_ids)
    # One holder per (job, attempt): a number is handed out again only after a release gave it back.
    holders: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for record in records:
        holders[record["jobId"], record["attempt"]].append(record)
    for claims in holders.values():
        claims.sort(key=lambda r: r["claimNumber"])
        assert all(r["outcome"] == "released" for r in claims[:-1]), claims

    # The scenario really ran: several workers, every kind of ending.
    assert len({r["workerId"] for r in records}) == WORKERS
    assert outcomes["completed"] == JOBS
    assert outcomes["released"] > 0 and outcomes["failed"] > 0 and outcomes["lease_lost"] > 0, outcomes
    assert all(r["willRetry"] for r in records if r["outcome"] == "failed")

    for job_id in job_ids:
        history = sorted(by_job[job_id], key=lambda r: r["claimNumber"])
        job = convex.query("operator:get", {"jobId": job_id})
        # None lost: the job counts exactly the claims the workers recorded, numbered 1..n.
        assert [r["claimNumber"] for r in history] == list(range(1, len(history) + 1)), history
        assert job["claims"] == len(history)
        # Attempts follow from how each earlier claim ended: only a release does not count.
        # So a (job, attempt) is held by one claim, except for claims that released it.
        assert history[0]["attempt"] == 1, history
        for before, after in itertools.pairwise(history):
            expected = before["attempt"] + (0 if before["outcome"] == "released" else 1)
            assert after["attempt"] == expected, history
        # Completed once, by the last claim, whose result and documents are the job's.
        assert [r["outcome"] for r in history].count("completed") == 1, history
        last = history[-1]
        assert last["outcome"] == "completed", history
        assert job["status"] == "completed" and job["attempts"] == last["attempt"]
        assert job["result"] == {"leaseToken": last["leaseToken"], "workerId": last["workerId"],
                                 "attempt": last["attempt"]}
        assert job.get("leaseExpiries", 0) == sum(r["outcome"] == "lease_lost" for r in history)
        assert "leaseOwner" not in job and "leaseExpiresAt" not in job
        docs = operator_docs(convex, job_id)
        assert [d["slug"] for d in docs] == list(DOC_SLUGS), docs
        assert {d["content"] for d in docs} == {f"lease {last['leaseToken']} by {last['workerId']}"}, docs


if __name__ == "__main__":
    worker_main(*sys.argv[1:])
