"""Results upload: one job whose CLI writes `count` documents of `size` bytes, repeated.

Per job, from the agent's /metrics (deltas around each job, one agent, one job at a time):
`fondation_agent_stage_duration_seconds{stage="upload"}` (the worker:saveDocs calls),
`{stage="results"}` (reading the output dir) and the number of worker:saveDocs calls.
"""

from __future__ import annotations

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


def run(directory: Path, repo: Path, *, count: int, size: int, repeats: int) -> dict[str, Any]:
    say(f"upload: {repeats} job(s) of {count} documents x {size} bytes")
    runs = []
    with backend() as server:
        agent = BenchAgent(directory / "upload", server.url, "upload")
        with agents_running([agent]):
            producer = Producer(server)
            load_before = load()
            before = agent.metrics()
            for _ in range(repeats):
                job_id = producer.enqueue(repo, f"docs:{count}:{size}")
                row = producer.wait_all_finished([job_id], timeout=300)[job_id]
                after = agent.metrics()

                def delta(name: str, before=before, after=after, **labels: str) -> float:
                    return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

                docs = producer.docs(job_id)
                runs.append({
                    "job_id": job_id,
                    "status": row["status"],
                    "documents": len(docs),
                    "content_bytes": sum(len(d["content"].encode()) for d in docs),
                    "result_bytes": (row.get("result") or {}).get("bytes"),
                    "upload_seconds": delta("fondation_agent_stage_duration_seconds_sum", stage="upload"),
                    "results_seconds": delta("fondation_agent_stage_duration_seconds_sum", stage="results"),
                    "save_docs_calls": delta("fondation_agent_convex_calls_total", function="worker:saveDocs"),
                    "all_calls": delta("fondation_agent_convex_calls_total"),
                })
                before = after
            producer.close()
            load_after = load()
    seconds = {job_id: attempts[0].get("seconds") for job_id, attempts in job_timelines([agent]).items()}
    for entry in runs:
        entry["job_seconds"] = seconds.get(entry["job_id"])
    return {
        "count": count, "size": size, "repeats": repeats, "runs": runs,
        "upload_seconds": distribution([r["upload_seconds"] for r in runs]),
        "load_before": load_before, "load_after": load_after,
    }


def report(result: dict[str, Any]) -> str:
    rows = [[
        i + 1, r["status"], r["documents"], f"{(r['result_bytes'] or 0) / 1e6:.2f} MB",
        fmt(r["results_seconds"], digits=3), fmt(r["upload_seconds"], digits=3), f"{r['save_docs_calls']:.0f}",
        f"{r['all_calls']:.0f}", fmt(r["job_seconds"], digits=3),
    ] for i, r in enumerate(result["runs"])]
    return table(
        ["run", "status", "docs", "bytes", "results s", "upload s", "saveDocs calls", "Convex calls", "job s"],
        rows,
    )
