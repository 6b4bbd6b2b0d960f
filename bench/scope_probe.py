#!/usr/bin/env python3
"""What a systemd scope adds to starting a job: runs on the host being measured (this machine, or
a VM through ssh: `ssh HOST python3 - ARGS < scope_probe.py`), stdlib only, prints one JSON object.

Variants, interleaved round by round (so drift in the host's load hits all alike):
  plain        COMMAND                                  (sandbox = "process", as the agent's user)
  as-user      sudo -u USER env XDG_RUNTIME_DIR=… COMMAND (only with --user)
  scope        [sudo -u USER env XDG_RUNTIME_DIR=…] systemd-run --user --scope --quiet --collect
               --unit=… -p MemoryMax=… -p MemorySwapMax=0 -p CPUQuota=… -p TasksMax=… -p RuntimeMaxSec=…
               -- COMMAND                               (sandbox = "systemd-scope", as the design has it)
  scope+python the same, with a Python interpreter exec'ing systemd-run in between: the agent's runner
               goes through a Python job-helper (fondation_agent/scope.py), this approximates its start-up
Each sample is the wall time from spawning to the exit of a command that does nothing (/bin/true).
"""

import argparse
import json
import os
import platform
import pwd
import random
import subprocess
import sys
import time


def percentile(values, q):
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", help="the job user (sudo -u USER); default: this user")
    parser.add_argument("-n", type=int, default=100, help="samples per variant")
    parser.add_argument("--command", default="/bin/true")
    parser.add_argument("--memory-max", default="4G")
    parser.add_argument("--cpu-quota", default="200%")
    parser.add_argument("--tasks-max", default="512")
    args = parser.parse_args()

    prefix = []
    if args.user:
        uid = pwd.getpwnam(args.user).pw_uid
        prefix = ["sudo", "-n", "-u", args.user, "env", f"XDG_RUNTIME_DIR=/run/user/{uid}"]
    variants = {"plain": [args.command]}
    if args.user:
        variants["as-user"] = [*prefix, args.command]
    tag = f"{os.getpid()}-{int(time.time())}"

    def scope(index):
        return [*prefix, "systemd-run", "--user", "--scope", "--quiet", "--collect",
                f"--unit=bench-scope-{tag}-{index}", "-p", f"MemoryMax={args.memory_max}", "-p", "MemorySwapMax=0",
                "-p", f"CPUQuota={args.cpu_quota}", "-p", f"TasksMax={args.tasks_max}", "-p", "RuntimeMaxSec=60",
                "--", args.command]

    def scope_through_python(index):
        argv = scope(index)
        at = len(prefix)
        return [*argv[:at], sys.executable, "-I", "-c", "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])",
                *argv[at:]]

    samples = {name: [] for name in [*variants, "scope", "scope+python"]}
    failures = {}
    for index in range(args.n):
        order = list(samples)
        random.shuffle(order)
        for name in order:
            if name == "scope":
                argv = scope(index)
            elif name == "scope+python":
                argv = scope_through_python(index + args.n)
            else:
                argv = variants[name]
            started = time.perf_counter()
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
            elapsed = (time.perf_counter() - started) * 1000
            if done.returncode != 0:
                failures[name] = f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[:500]}"
                continue
            samples[name].append(elapsed)
    summary = {}
    for name, values in samples.items():
        if values:
            summary[name] = {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
                             "p99": percentile(values, 99), "mean": sum(values) / len(values)}
    systemd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=False).stdout
    print(json.dumps({
        "host": " ".join(platform.uname()), "nproc": os.cpu_count(), "load": os.getloadavg(),
        "systemd": systemd.splitlines()[0] if systemd else None, "user": args.user, "command": args.command,
        "ms": summary, "failures": failures,
    }))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
