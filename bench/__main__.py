"""`python -m bench` (or `make bench`): every scenario, then a summary table. See bench/README.md.

    python -m bench                          # the full run (~27 min)
    python -m bench --quick                  # smoke run with small counts (~6 min)
    python -m bench --scenario pickup --scenario upload --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench import cost, idle, pickup, restart, scope, throughput, upload
from bench.harness import load, machine, make_git_repo, say, workdir

SCENARIOS = ("pickup", "restart", "throughput", "idle", "upload", "scope", "cost")
FULL = {
    "pickup_jobs": 300, "pickup_gap": 2.0, "pickup_concurrency": 16, "restart_jobs": 60,
    "throughput_jobs": 500, "throughput_agents": 4, "throughput_concurrency": 4, "serial_jobs": 100,
    "idle_seconds": 300.0, "upload_docs": 200, "upload_size": 50 * 1024, "upload_repeats": 5,
    "scope_samples": 100, "cost_docs": 100, "cost_size": 50 * 1024, "cost_jobs": 2, "cost_window": 60.0,
}
QUICK = {**FULL, "pickup_jobs": 20, "restart_jobs": 10, "throughput_jobs": 50, "serial_jobs": 20, "idle_seconds": 30.0,
         "upload_repeats": 1, "scope_samples": 10, "cost_docs": 20, "cost_jobs": 1, "cost_window": 15.0}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, not a measurement")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} ({QUICK[key]} with --quick)")
    parser.add_argument("--scope-user", help="measure scopes as this job user (sudo -u USER), e.g. fondation-job")
    parser.add_argument("--scope-ssh", help="measure scopes on the host this ssh command reaches (e.g. the VM)")
    parser.add_argument("--scope-vm", action="store_true",
                        help="measure scopes in the VM tier's guest (vm/qemu.py; boots qemu, cached image only)")
    parser.add_argument("--json", type=Path, help="also write every number (and raw latencies) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (agent logs, configs)")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    chosen = args.scenario or list(SCENARIOS)
    directory = workdir(args.keep)
    repo = make_git_repo(directory / "repository")
    info = machine()
    say(f"work directory {directory}{' (kept)' if args.keep else ''}; {info['uptime']}")
    results: dict[str, Any] = {"machine": info, "quick": args.quick,
                               "settings": {k: getattr(args, k) for k in FULL}, "scenarios": {}}
    reports: dict[str, str] = {}
    runners = {
        "pickup": lambda: pickup.run(directory, repo, jobs=args.pickup_jobs, mean_gap=args.pickup_gap,
                                     concurrency=args.pickup_concurrency),
        "restart": lambda: restart.run(directory, repo, jobs=args.restart_jobs, mean_gap=1.0),
        "throughput": lambda: throughput.run(directory, repo, jobs=args.throughput_jobs,
                                             agents=args.throughput_agents, concurrency=args.throughput_concurrency,
                                             serial_jobs=args.serial_jobs),
        "idle": lambda: idle.run(directory, seconds=args.idle_seconds),
        "upload": lambda: upload.run(directory, repo, count=args.upload_docs, size=args.upload_size,
                                     repeats=args.upload_repeats),
        "scope": lambda: scope.run(samples=args.scope_samples, user=args.scope_user, ssh=args.scope_ssh,
                                   vm=args.scope_vm, directory=directory),
        "cost": lambda: cost.run(directory, repo, docs=args.cost_docs, size=args.cost_size, jobs=args.cost_jobs,
                                 window=args.cost_window),
    }
    modules = {"pickup": pickup, "restart": restart, "throughput": throughput, "idle": idle, "upload": upload,
               "scope": scope, "cost": cost}
    failed = False
    for name in SCENARIOS:
        if name not in chosen:
            continue
        started = time.monotonic()
        load_at_start = load()
        try:
            result = runners[name]()
        except Exception as error:  # one broken scenario must not cost the others' numbers
            say(f"{name}: FAILED: {error!r}")
            result, failed = {"error": repr(error)}, True
        result["wall_seconds"] = round(time.monotonic() - started, 1)
        result.setdefault("load_before", load_at_start)
        result.setdefault("load_after", load())
        results["scenarios"][name] = result
        reports[name] = result["error"] if "error" in result else modules[name].report(result)
        say(f"{name}: done in {result['wall_seconds']:.0f} s\n{reports[name]}\n")

    print(summary(info, results, reports, args.quick))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
        say(f"wrote {args.json}")
    return 1 if failed or any_problems(results) else 0


def _jsonable(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def any_problems(results: dict[str, Any]) -> bool:
    scenarios = results["scenarios"]
    if scenarios.get("throughput", {}).get("problems") or scenarios.get("restart", {}).get("problems"):
        return True
    return any(c["problems"] for c in scenarios.get("pickup", {}).get("configurations", []))


def summary(info: dict[str, Any], results: dict[str, Any], reports: dict[str, str], quick: bool) -> str:
    lines = [
        "# fondation-agent bench" + (" (--quick: smoke run, counts too small to quote)" if quick else ""),
        "",
        f"- date: {info['date']}",
        f"- machine: {info['uname']}",
        f"- CPU: {info['cpu']}, nproc {info['nproc']}, {info['memory_mb']} MiB; Python {info['python']}, "
        f"node {info['node']}; commit {info['git']}",
        f"- command: `{info['command']}`",
        f"- uptime at start: {info['uptime']}",
    ]
    for name, text in reports.items():
        result = results["scenarios"][name]
        before, after = result.get("load_before", {}), result.get("load_after", {})
        lines += [
            "",
            f"## {name} ({result['wall_seconds']:.0f} s; load {before.get('load1')} → {after.get('load1')}, "
            f"nproc {before.get('nproc')})",
            "",
            text,
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
