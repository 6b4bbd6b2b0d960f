"""A localconvex restart in the middle: subscribed agents reconnect by themselves and pick up again.

Four idle agents on their subscription (defaults), a backend with a state file (it must survive the
restart), Poisson arrivals. After half the jobs the backend is stopped (SIGTERM: its sockets close)
and started again on the same port; arrivals resume at once. Measured: created → claimed before
the restart and for the jobs queued after it (the first of them wait for the clients to reconnect),
claim calls per job, and whether every job completed exactly once.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchAgent, Producer, agents_running, backend, fmt, job_timelines, say, table
from bench.pickup import analyse, claim_calls

AGENTS = 4
CONCURRENCY = 16  # more slots than jobs in flight: pickup, not queueing (pickup.py)


def run(directory: Path, repo: Path, *, jobs: int, mean_gap: float) -> dict[str, Any]:
    say(f"restart: {AGENTS} subscribed agents, {jobs} jobs, backend restarted after {jobs // 2}")
    rng = random.Random(7)
    server = backend(state_file=directory / "restart-backend.json").start()
    try:
        agents = [BenchAgent(directory / "restart", server.url, f"restart-{i}", concurrency=CONCURRENCY)
                  for i in range(AGENTS)]
        with agents_running(agents):
            time.sleep(2.0)  # every agent subscribed
            producer = Producer(server)
            claims_before = claim_calls(agents)
            before, after = [], []
            for n in range(jobs):
                if n == jobs // 2:
                    producer.close()
                    stopped = time.monotonic()
                    server.stop()
                    server.start()
                    down_seconds = time.monotonic() - stopped
                    producer = Producer(server)
                time.sleep(rng.expovariate(1 / mean_gap))
                (before if n < jobs // 2 else after).append(producer.enqueue(repo, "instant"))
            rows = producer.wait_all_finished(before + after, timeout=180)
            claims = claim_calls(agents) - claims_before
            producer.close()
    finally:
        server.stop()
    timelines = job_timelines(agents)
    parts = {name: analyse(name, "subscription", 2.0, AGENTS, CONCURRENCY, ids, rows, timelines)
             for name, ids in (("before the restart", before), ("after the restart", after))}
    first_after = [timelines[job_id][0]["claimed"] - rows[job_id]["createdAt"] / 1000 for job_id in after[:3]
                   if timelines.get(job_id)]
    return {
        "jobs": jobs,
        "down_seconds": round(down_seconds, 2),
        "parts": parts,
        "first_jobs_after_restart_created_to_claimed": [round(x, 3) for x in first_after],
        "claim_calls_per_job": claims / jobs,
        "problems": [p for part in parts.values() for p in part["problems"]],
    }


def report(result: dict[str, Any]) -> str:
    rows = []
    for name, part in result["parts"].items():
        claim = part["created_to_claimed"]
        rows.append([name, claim["n"], fmt(claim["p50"]), fmt(claim["p95"]), fmt(claim["p99"]), fmt(claim["max"]),
                     "ok" if not part["problems"] else f"{len(part['problems'])} PROBLEMS"])
    text = table(["jobs", "n", "→claimed p50", "p95", "p99", "max", "check"], rows)
    firsts = ", ".join(fmt(x) for x in result["first_jobs_after_restart_created_to_claimed"])
    return (text + f"\n\nBackend down (stop → ready again): {result['down_seconds']:.2f} s. The first jobs queued after"
            f" it, created → claimed: {firsts} s. Claim calls per job: {result['claim_calls_per_job']:.2f}.")
