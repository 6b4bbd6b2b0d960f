"""Pickup latency: how long a job waits for an idle fleet to notice it.

For each way of waking (the subscription, polling at 2 s and at 5 s) and number of agents, one
localconvex backend and its own agents; all
configurations run side by side (separate backends, separate agents), so the whole matrix costs
one arrival schedule's time. Jobs arrive as a Poisson process (exponential gaps, mean `mean_gap`)
and the CLI exits at once, so every job finds the fleet idle: each agent has more slots
(`concurrency`) than jobs ever in flight, and an agent with a free slot polls on its own
schedule whatever the arrivals do. The harness checks that no agent ever had all its slots busy.

Measured per job: created (Convex `createdAt`) → `job claimed` (agent log), and → `CLI started`.
Same machine, same clock. And per configuration, the fleet's `worker:claim` calls per job (idle
polls included: what a job costs Convex). Subscribed agents keep every other setting at its
default (`wake_jitter` 0.1 s, `safety_poll_interval` 300 s).
"""

from __future__ import annotations

import random
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
    run_in_threads,
    say,
    table,
)

# (wake, poll_interval): the subscription (default; polling at 2 s only while it is down), our
# polling default and the seed's.
MODES = (("subscription", 2.0), ("poll", 2.0), ("poll", 5.0))
FLEETS = (1, 4, 16)
JITTER = (0.8, 1.2)  # worker.py: next poll = poll_interval x uniform(0.8, 1.2)
CALLS = "fondation_agent_convex_calls_total"


def mode_name(wake: str, interval: float) -> str:
    return "subscription" if wake == "subscription" else f"poll {interval:g} s"


def mode_tag(wake: str, interval: float) -> str:
    """For agent names."""
    return "sub" if wake == "subscription" else f"poll{interval:g}s"


def claim_calls(agents: list[BenchAgent]) -> float:
    return sum(metric_sum(a.metrics(), CALLS, function="worker:claim") for a in agents)


def run_configuration(
    directory: Path, repo: Path, wake: str, interval: float, fleet: int, *, jobs: int, mean_gap: float,
    concurrency: int, seed: int,
) -> dict[str, Any]:
    name = f"{mode_tag(wake, interval)}-{fleet}agents"
    rng = random.Random(seed)
    with backend() as server:
        agents = [
            BenchAgent(directory / name, server.url, f"{name}-{i}", wake=wake, poll_interval=interval,
                       concurrency=concurrency)
            for i in range(fleet)
        ]
        # Agents started at random moments within one poll interval: independent phases, as on real hosts.
        with agents_running(agents, stagger=interval * JITTER[1]):
            time.sleep(interval * JITTER[1])  # every agent past its start-up poll
            producer = Producer(server)
            load_before = load()
            claims_before = claim_calls(agents)
            job_ids = []
            started = time.monotonic()
            due = started
            for _ in range(jobs):
                due += rng.expovariate(1 / mean_gap)
                time.sleep(max(0.0, due - time.monotonic()))
                job_ids.append(producer.enqueue(repo, "instant"))
            arrivals_seconds = time.monotonic() - started
            rows = producer.wait_all_finished(job_ids, timeout=120 + 3 * interval)
            claims = claim_calls(agents) - claims_before
            producer.close()
            load_after = load()
    timelines = job_timelines(agents)
    return analyse(name, wake, interval, fleet, concurrency, job_ids, rows, timelines) | {
        "claim_calls_per_job": claims / len(job_ids),
        "mean_gap": mean_gap,
        "arrivals_seconds": round(arrivals_seconds, 1),
        "load_before": load_before,
        "load_after": load_after,
    }


def analyse(name, wake, interval, fleet, concurrency, job_ids, rows, timelines) -> dict[str, Any]:
    to_claim, to_cli, claim_to_cli = [], [], []
    problems = []
    for job_id in job_ids:
        row = rows[job_id]
        attempts = timelines.get(job_id, [])
        if row["status"] != "completed" or row["attempts"] != 1 or len(attempts) != 1:
            problems.append(f"{job_id}: status {row['status']}, attempts {row['attempts']}, claims {len(attempts)}")
            continue
        created = row["createdAt"] / 1000
        attempt = attempts[0]
        to_claim.append(attempt["claimed"] - created)
        to_cli.append(attempt["cli_started"] - created)
        claim_to_cli.append(attempt["cli_started"] - attempt["claimed"])
    # Slots: the most jobs one agent held at once (must stay below concurrency: no queueing).
    busiest = 0
    by_agent: dict[str, list[tuple[float, int]]] = {}
    for attempts in timelines.values():
        for attempt in attempts:
            marks = by_agent.setdefault(attempt["agent"], [])
            marks += [(attempt["claimed"], 1), (attempt.get("ended", 1e18), -1)]
    for marks in by_agent.values():
        held = 0
        for _, change in sorted(marks):
            held += change
            busiest = max(busiest, held)
    if busiest >= concurrency:
        problems.append(f"an agent had all {concurrency} slots busy: some jobs queued for a slot")
    return {
        "name": name,
        "wake": wake,
        "poll_interval": interval,
        "agents": fleet,
        "concurrency": concurrency,
        "jobs": len(job_ids),
        "created_to_claimed": distribution(to_claim),
        "created_to_cli_started": distribution(to_cli),
        "claimed_to_cli_started": distribution(claim_to_cli),
        "max_slots_busy": busiest,
        "problems": problems,
        "raw_created_to_claimed": [round(x, 4) for x in to_claim],
    }


def model(interval: float, fleet: int, samples: int = 200_000, seed: int = 1) -> dict[str, float]:
    """Created → next poll by any of `fleet` independent agents polling every interval x U(0.8, 1.2),
    for a job arriving at a random moment (Monte Carlo; no claim call, no job start)."""
    rng = random.Random(seed)
    low, high = interval * JITTER[0], interval * JITTER[1]
    waits = []
    for _ in range(samples // fleet if fleet > 1 else samples):
        best = float("inf")
        for _ in range(fleet):
            # Length-biased interval (the arrival falls in a long one more often), then a uniform point in it.
            while True:
                length = rng.uniform(low, high)
                if rng.uniform(0, high) <= length:
                    break
            best = min(best, rng.uniform(0, length))
        waits.append(best)
    return distribution(waits)


def interval_for_p95(fleet: int, target: float = 1.0) -> float:
    """The longest poll_interval whose modelled p95 pickup stays under `target` s. The wait scales
    with the interval (every time in the model is a multiple of it), so one run at 1 s gives it."""
    return target / model(1.0, fleet)["p95"]


def run(directory: Path, repo: Path, *, jobs: int, mean_gap: float, concurrency: int,
        modes=MODES, fleets=FLEETS) -> dict[str, Any]:
    configurations = [(wake, interval, fleet) for wake, interval in modes for fleet in fleets]
    say(f"pickup: {len(configurations)} configurations side by side, {jobs} jobs each, "
        f"Poisson arrivals with mean gap {mean_gap} s (≈ {jobs * mean_gap / 60:.1f} min)")
    results = run_in_threads([
        (lambda w=w, i=i, f=f, n=n: run_configuration(directory, repo, w, i, f, jobs=jobs, mean_gap=mean_gap,
                                                      concurrency=concurrency, seed=1000 + n))
        for n, (w, i, f) in enumerate(configurations)
    ])
    for result in results:
        result["model"] = model(result["poll_interval"], result["agents"]) if result["wake"] == "poll" else None
    targets = {fleet: interval_for_p95(fleet) for fleet in (1, 2, 4, 8, 14, 16, 32)}
    return {"configurations": results, "interval_for_p95_1s": targets}


def report(result: dict[str, Any]) -> str:
    rows = []
    for c in result["configurations"]:
        claim, cli, model_ = c["created_to_claimed"], c["created_to_cli_started"], c["model"]
        rows.append([
            mode_name(c["wake"], c["poll_interval"]), c["agents"], claim["n"],
            fmt(claim["p50"]), fmt(claim["p95"]), fmt(claim["p99"]), fmt(claim["max"]),
            fmt(cli["p50"]), fmt(cli["p95"]), fmt(cli["p99"]),
            fmt(c["claimed_to_cli_started"]["p50"]),
            "—" if model_ is None else f"{fmt(model_['p50'], digits=2)} / {fmt(model_['p95'], digits=2)}",
            f"{c['claim_calls_per_job']:.2f}",
            "ok" if not c["problems"] else f"{len(c['problems'])} PROBLEMS",
        ])
    text = table(
        ["wake", "agents", "jobs", "→claimed p50", "p95", "p99", "max", "→CLI started p50", "p95", "p99",
         "claimed→CLI p50", "model p50/p95", "claim calls/job", "check"],
        rows,
    )
    text += ("\n\nSeconds. Model: a job arriving at a random moment, N agents polling every interval x U(0.8, 1.2)."
             " Claim calls per job: the fleet's worker:claim calls from the first arrival to the last job's end,"
             " idle polls included, divided by the jobs.")
    lines = ["", "Longest poll_interval whose modelled p95 pickup is < 1 s, and what polling then costs:", ""]
    lines.append(table(
        ["agents", "poll_interval", "idle calls/agent·h", "idle calls/fleet·h", "vs seed (720/agent·h)"],
        [[fleet, f"{interval:.2f} s", f"{3600 / interval:.0f}", f"{fleet * 3600 / interval:.0f}",
          f"x{(3600 / interval) / 720:.2f} per agent"]
         for fleet, interval in result["interval_for_p95_1s"].items()],
    ))
    for c in result["configurations"]:
        for problem in c["problems"][:5]:
            lines.append(f"problem in {c['name']}: {problem}")
    return text + "\n".join(lines)
