"""Convex cost, from localconvex's accounting (GET /_localconvex/usage, every execution: HTTP, socket
and subscription re-runs): what Convex would bill in function calls and database bandwidth.

Per job: one agent, one job at a time whose CLI writes `docs` documents of `size` bytes; the usage
from enqueue to its end (the agent's idle calls meanwhile included), as calls, bytes read and bytes
written, and as a ratio to the documents' bytes.

Per idle agent-hour: agents at default settings with an empty queue, 1 then 16, while 0 or `running`
jobs run (held by one more agent, its CLI sleeping): the usage over `window` s with the idle agents,
minus the same window before they started (the running jobs' own cost), per idle agent and hour.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness import BenchAgent, Producer, agents_running, backend, fmt, say, table

ACTIVE = ("running", "cloning", "analyzing", "gathering")
WARM_UP = 5.0
FIELDS = ("calls", "documentsRead", "bytesRead", "documentsWritten", "bytesWritten")


def totals(usage: dict[str, Any]) -> dict[str, float]:
    """The sum over every function but the bench's own (operator:*: enqueue, polling for the end), plus
    each function's calls and bytes read."""
    functions = {name: entry for name, entry in usage["functions"].items() if not name.startswith("operator:")}
    summed: dict[str, Any] = {f: sum(entry[f] for entry in functions.values()) for f in FIELDS}
    summed["bytesReadBy"] = {name: entry["bytesRead"] for name, entry in functions.items()}
    summed["callsBy"] = {name: entry["calls"] for name, entry in functions.items()}
    summed["limitErrors"] = usage["limitErrors"]
    return summed


def per_job(directory: Path, repo: Path, *, docs: int, size: int, jobs: int) -> list[dict[str, Any]]:
    runs = []
    with backend() as server, agents_running([BenchAgent(directory / "cost-job", server.url, "cost-job")]):
        producer = Producer(server)
        for _ in range(jobs):
            server.reset_usage()
            job_id = producer.enqueue(repo, f"docs:{docs}:{size}")
            row = producer.wait_all_finished([job_id], timeout=600)[job_id]
            used = totals(server.usage())
            # The job's own count (its summary): reading the documents back takes more than one call past 16 MiB.
            content = (row.get("result") or {}).get("bytes") or 0
            runs.append({"status": row["status"], "documents": docs, "content_bytes": content, **used})
        producer.close()
    return runs


def measure(server: Any, window: float) -> dict[str, Any]:
    server.reset_usage()
    time.sleep(window)
    return totals(server.usage())


def idle(directory: Path, repo: Path, *, running: int, fleet: int, window: float) -> list[dict[str, Any]]:
    """Rows for 1 and `fleet` idle agents while `running` jobs run."""
    rows = []
    with backend() as server, ExitStack() as agents:
        producer = Producer(server)
        agents.callback(producer.close)
        if running:
            agents.enter_context(agents_running(
                [BenchAgent(directory / f"cost-busy-{running}", server.url, "busy", concurrency=running)]))
            job_ids = [producer.enqueue(repo, "sleep:3600") for _ in range(running)]
            deadline = time.monotonic() + 120
            while any(producer.get(j)["status"] not in ACTIVE for j in job_ids) and time.monotonic() < deadline:
                time.sleep(0.5)
        time.sleep(WARM_UP)
        base = measure(server, window)
        started = 0
        for count in (1, fleet):
            # The fleet's row adds agents to the first one.
            agents.enter_context(agents_running([
                BenchAgent(directory / f"cost-idle-{running}", server.url, f"idle-{running}-{i}")
                for i in range(started, count)]))
            started = count
            time.sleep(WARM_UP)
            used = measure(server, window)
            hours = count * window / 3600
            rows.append({
                "agents": count, "running": running, "window": window,
                "calls_per_agent_hour": (used["calls"] - base["calls"]) / hours,
                "bytes_read_per_agent_hour": (used["bytesRead"] - base["bytesRead"]) / hours,
                "calls_by": {k: v - base["callsBy"].get(k, 0) for k, v in used["callsBy"].items()},
                "base_calls_per_hour": base["calls"] * 3600 / window,
            })
    return rows


def run(directory: Path, repo: Path, *, docs: int, size: int, jobs: int, window: float, fleet: int = 16,
        running: int = 20) -> dict[str, Any]:
    say(f"cost: {jobs} job(s) of {docs} x {size} bytes; idle 1 and {fleet} agents with 0 and {running} running jobs, "
        f"{window:.0f} s windows")
    return {
        "jobs": per_job(directory, repo, docs=docs, size=size, jobs=jobs),
        "idle": [row for r in (0, running) for row in idle(directory, repo, running=r, fleet=fleet, window=window)],
    }


def ratio(part: float, whole: float) -> str:
    return f"{part / whole:.2f}" if whole else "-"


def report(result: dict[str, Any]) -> str:
    job_rows = [[
        r["status"], r["documents"], f"{r['content_bytes'] / 1e6:.2f}", f"{r['calls']:.0f}",
        f"{r['bytesRead'] / 1e6:.2f}", f"{r['bytesWritten'] / 1e6:.2f}",
        ratio(r["bytesRead"], r["content_bytes"]), ratio(r["bytesWritten"], r["content_bytes"]),
        max(r["bytesReadBy"], key=r["bytesReadBy"].get), r["limitErrors"],
    ] for r in result["jobs"]]
    idle_rows = [[
        r["agents"], r["running"], fmt(r["calls_per_agent_hour"], digits=0),
        fmt(r["bytes_read_per_agent_hour"] / 1e3, digits=0), fmt(r["base_calls_per_hour"], digits=0),
        ", ".join(f"{k} {v * 3600 / r['window'] / r['agents']:.0f}" for k, v in sorted(r["calls_by"].items()) if v > 0),
    ] for r in result["idle"]]
    return "\n\n".join([
        "Per job (goal: reads ≤ 1.5 x the documents' bytes)",
        table(["status", "docs", "docs MB", "calls", "MB read", "MB written", "read x", "written x", "top reader",
               "limit errors"], job_rows),
        "Per idle agent-hour (goal: ≤ 60 calls, ≤ 100 KB read)",
        table(["idle agents", "running jobs", "calls/agent-h", "KB read/agent-h", "running jobs' calls/h",
               "calls/agent-h by function"], idle_rows),
    ])
