"""Throughput and per-job overhead: a burst of jobs whose CLI exits at once, on a few agents with
several slots each; and in the same run, the queue's promise: every job completed exactly once.

Per job (agent log times, and the job row's `finishedAt`, all on this machine's clock):
  claim     start of the worker:claim call → `job claimed`   (start = `job ended` - its `seconds`)
  clone     `job claimed` → stage `analyzing` (job thread, repository check, workspace, git clone)
  spawn     stage `analyzing` → `CLI started` (the runner starting the process)
  cli       `CLI started` → `CLI ended` (the CLI's own time; not overhead)
  results   `CLI ended` → `finishedAt` (reading the output, worker:saveDocs, until worker:complete applies)
  complete  `finishedAt` → `job ended` (complete's answer, workspace removal)
overhead = `seconds` - cli.

A second, serial pass (1 agent x 1 slot, the same instant jobs queued up front, so they run back to
back) gives the same split without jobs competing for the 2 CPUs: what the agent itself adds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchAgent,
    Producer,
    agents_running,
    backend,
    distribution,
    fmt,
    job_timelines,
    load,
    metric_sum,
    say,
    table,
)

STAGES = ("claim", "clone", "spawn", "cli", "results", "complete", "overhead", "total")


def run(directory: Path, repo: Path, *, jobs: int, agents: int, concurrency: int, serial_jobs: int) -> dict[str, Any]:
    burst = measure(directory, repo, jobs=jobs, agents=agents, concurrency=concurrency, name="tp")
    serial = measure(directory, repo, jobs=serial_jobs, agents=1, concurrency=1, name="serial") if serial_jobs else None
    return {**burst, "serial": serial, "problems": burst["problems"] + (serial["problems"] if serial else [])}


def measure(directory: Path, repo: Path, *, jobs: int, agents: int, concurrency: int, name: str) -> dict[str, Any]:
    say(f"throughput ({name}): {jobs} instant jobs, {agents} agents x {concurrency} slots")
    with backend() as server:
        fleet = [BenchAgent(directory / name, server.url, f"{name}-{i}", concurrency=concurrency)
                 for i in range(agents)]
        with agents_running(fleet):
            producer = Producer(server)
            load_before = load()
            started = time.monotonic()
            job_ids = [producer.enqueue(repo, "instant") for _ in range(jobs)]
            enqueue_seconds = time.monotonic() - started
            rows = producer.wait_all_finished(job_ids, timeout=600, poll=1.0)
            wall = time.monotonic() - started
            docs = {job_id: producer.docs(job_id) for job_id in job_ids}
            load_after = load()
            samples = [agent.metrics() for agent in fleet]
            producer.close()
    timelines = job_timelines(fleet)
    result = analyse(job_ids, rows, docs, timelines, samples)
    result.update(
        jobs=jobs, agents=agents, concurrency=concurrency, enqueue_seconds=round(enqueue_seconds, 2),
        harness_wall_seconds=round(wall, 2), load_before=load_before, load_after=load_after,
    )
    return result


def analyse(job_ids, rows, docs, timelines, samples) -> dict[str, Any]:
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    problems = []
    for job_id in job_ids:
        row, attempts = rows[job_id], timelines.get(job_id, [])
        result = row.get("result") or {}
        checks = {
            "status completed": row["status"] == "completed",
            "attempts == 1": row["attempts"] == 1,
            "claimed once": len(attempts) == 1,
            "result.attempt == 1": result.get("attempt") == 1,
            # The CLI's one document, and the table of contents the agent builds when the CLI wrote none.
            "two documents": result.get("documents") == 2 and len(docs[job_id]) == 2,
            "ended completed": len(attempts) == 1 and attempts[0].get("outcome") == "completed",
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            problems.append(f"{job_id}: {', '.join(failed)}")
            continue
        a = attempts[0]
        finished = row["finishedAt"] / 1000
        claim_started = a["ended"] - a["seconds"]
        cli = a["cli_ended"] - a["cli_started"]
        for stage, value in (
            ("claim", a["claimed"] - claim_started),
            ("clone", a["analyzing"] - a["claimed"]),
            ("spawn", a["cli_started"] - a["analyzing"]),
            ("cli", cli),
            ("results", finished - a["cli_ended"]),
            ("complete", a["ended"] - finished),
            ("overhead", a["seconds"] - cli),
            ("total", a["seconds"]),
        ):
            stages[stage].append(value)
    claims_logged = sum(len(attempts) for attempts in timelines.values())
    foreign = set(timelines) - set(job_ids)
    if foreign:
        problems.append(f"{len(foreign)} jobs claimed that the bench did not enqueue")
    completed = [rows[j] for j in job_ids if rows[j]["status"] == "completed"]
    first_created = min(rows[j]["createdAt"] for j in job_ids) / 1000
    last_finished = max((r["finishedAt"] for r in completed), default=0) / 1000
    first_claim = min((a["claimed"] for attempts in timelines.values() for a in attempts), default=0)
    makespan = last_finished - first_created
    calls: dict[str, float] = {}
    for sample in samples:
        for function in ("worker:claim", "worker:heartbeat", "worker:saveDocs", "worker:complete"):
            calls[function] = calls.get(function, 0) + metric_sum(
                sample, "fondation_agent_convex_calls_total", function=function)
    finished = sum(metric_sum(s, "fondation_agent_jobs_finished_total") for s in samples)
    by_agent = {}
    for attempts in timelines.values():
        for a in attempts:
            by_agent[a["agent"]] = by_agent.get(a["agent"], 0) + 1
    return {
        "completed": len(completed),
        "claims_logged": claims_logged,
        "agent_attempts_finished": finished,
        "duplicates": sum(1 for j in job_ids if len(timelines.get(j, [])) > 1),
        "lost": sum(1 for j in job_ids if rows[j]["status"] != "completed"),
        "problems": problems,
        "makespan_seconds": round(makespan, 3),
        "jobs_per_second": len(completed) / makespan if makespan > 0 else float("nan"),
        "claim_to_last_seconds": round(last_finished - first_claim, 3),
        "jobs_per_second_after_first_claim": len(completed) / (last_finished - first_claim)
        if last_finished > first_claim else float("nan"),
        "stages": {stage: distribution(values) for stage, values in stages.items()},
        "convex_calls_per_job": {f: round(n / max(1, len(completed)), 2) for f, n in calls.items()},
        "jobs_by_agent": by_agent,
    }


def report(result: dict[str, Any]) -> str:
    passes = [("burst", result), *([("serial", result["serial"])] if result.get("serial") else [])]
    rows = []
    for label, r in passes:
        verdict = "ok" if not r["problems"] and r["completed"] == r["jobs"] else "PROBLEMS"
        rows.append([label, r["jobs"], f"{r['agents']} x {r['concurrency']}", r["completed"], r["duplicates"],
                     r["lost"], verdict, fmt(r["makespan_seconds"], " s", 1), fmt(r["jobs_per_second"], digits=1),
                     fmt(r["jobs_per_second_after_first_claim"], digits=1)])
    head = table(["pass", "jobs", "agents x slots", "completed", "duplicates", "lost", "check", "makespan",
                  "jobs/s", "jobs/s after 1st claim"], rows)
    rows = []
    for stage in STAGES:
        row = [stage]
        for _, r in passes:
            d = r["stages"][stage]
            row += [fmt(d["p50"] * 1000, digits=1), fmt(d["p95"] * 1000, digits=1)]
        rows.append(row)
    headers = ["per job (ms)"]
    for label, r in passes:
        headers += [f"{label} ({r['agents']}x{r['concurrency']}) p50", "p95"]
    stages = table(headers, rows)
    lines = [head, "", stages, ""]
    for label, r in passes:
        calls = ", ".join(f"{f} {n:g}" for f, n in r["convex_calls_per_job"].items())
        lines.append(f"{label}: Convex calls per job (idle polls included): {calls}; "
                     f"jobs per agent: {r['jobs_by_agent']}")
    lines += [f"problem: {p}" for p in result["problems"][:10]]
    return "\n".join(lines)
