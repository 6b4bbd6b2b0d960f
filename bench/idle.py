"""Idle cost: what an agent with an empty queue costs its host and the Convex deployment.

Agents at default settings (concurrency 1) waking on their subscription (the default), and
polling at 2 s and 5 s (the seed's), side by side on one backend with an empty queue. After a
warm-up, over `seconds`: CPU seconds (utime + stime from /proc/<pid>/stat), RSS (VmRSS, sampled),
and Convex calls (`fondation_agent_convex_calls_total` from /metrics: HTTP calls; the
subscription's socket and its keep-alives are not calls), as calls per hour, claims apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchAgent,
    agents_running,
    backend,
    cpu_seconds,
    fmt,
    load,
    metric_sum,
    rss_kib,
    say,
    table,
)
from bench.pickup import MODES, mode_name, mode_tag

CALLS = "fondation_agent_convex_calls_total"
WARM_UP = 10.0
SAMPLE_EVERY = 5.0


def run(directory: Path, *, seconds: float, modes=MODES, per_mode: int = 2) -> dict[str, Any]:
    say(f"idle: {per_mode} agents for each of {[mode_name(*m) for m in modes]}, {seconds:.0f} s after "
        f"{WARM_UP:.0f} s warm-up")
    with backend() as server:
        fleet = [
            BenchAgent(directory / "idle", server.url, f"idle-{mode_tag(wake, interval)}-{i}", wake=wake,
                       poll_interval=interval)
            for wake, interval in modes for i in range(per_mode)
        ]
        with agents_running(fleet):
            time.sleep(WARM_UP)
            load_before = load()
            first = {a.name: (time.monotonic(), cpu_seconds(a.pid), a.metrics()) for a in fleet}
            rss = {a.name: [rss_kib(a.pid)] for a in fleet}
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(SAMPLE_EVERY, max(0.0, deadline - time.monotonic())))
                for a in fleet:
                    rss[a.name].append(rss_kib(a.pid))
            last = {a.name: (time.monotonic(), cpu_seconds(a.pid), a.metrics()) for a in fleet}
            load_after = load()
    agents = []
    for a in fleet:
        (t0, cpu0, m0), (t1, cpu1, m1) = first[a.name], last[a.name]
        elapsed = t1 - t0
        calls = metric_sum(m1, CALLS) - metric_sum(m0, CALLS)
        claims = metric_sum(m1, CALLS, function="worker:claim") - metric_sum(m0, CALLS, function="worker:claim")
        polling = a.settings["wake"] == "poll"
        agents.append({
            "name": a.name,
            "wake": a.settings["wake"],
            "poll_interval": a.settings["poll_interval"],
            "seconds": round(elapsed, 1),
            "cpu_seconds": round(cpu1 - cpu0, 3),
            "cpu_percent": 100 * (cpu1 - cpu0) / elapsed,
            "cpu_seconds_per_hour": (cpu1 - cpu0) * 3600 / elapsed,
            "rss_mib_end": rss[a.name][-1] / 1024,
            "rss_mib_max": max(rss[a.name]) / 1024,
            "rss_mib_start": rss[a.name][0] / 1024,
            "convex_calls": calls,
            "convex_calls_per_hour": calls * 3600 / elapsed,
            "claim_calls_per_hour": claims * 3600 / elapsed,
            # Claims: one per poll, or one per safety poll (60 s ± 20 %) on the subscription.
            "expected_claims_per_hour": 3600 / (a.settings["poll_interval"] if polling else 60.0),
        })
    return {"seconds": seconds, "agents": agents, "load_before": load_before, "load_after": load_after}


def report(result: dict[str, Any]) -> str:
    rows = [[
        a["name"], mode_name(a["wake"], a["poll_interval"]), fmt(a["seconds"], " s", 0),
        fmt(a["cpu_seconds"], digits=2), fmt(a["cpu_percent"], " %", 2), fmt(a["cpu_seconds_per_hour"], digits=1),
        f"{a['rss_mib_start']:.1f} → {a['rss_mib_end']:.1f} (max {a['rss_mib_max']:.1f})",
        f"{a['convex_calls']:.0f}", f"{a['convex_calls_per_hour']:.0f}", f"{a['claim_calls_per_hour']:.0f}",
        f"{a['expected_claims_per_hour']:.0f}",
    ] for a in result["agents"]]
    return table(
        ["agent", "wake", "window", "CPU s", "CPU", "CPU s/hour", "RSS MiB", "Convex calls", "calls/hour",
         "claims/hour", "expected claims/hour"],
        rows,
    )
