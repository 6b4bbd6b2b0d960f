"""Scope overhead (VM tier): starting a trivial CLI through `systemd-run --user --scope` as the job
user, against a plain process. Needs a host where systemd is the init and the job user has a
lingering user manager. Where, in order:
  --scope-ssh CMD   a host you prepared, reached by `CMD python3 - ARGS` (e.g. a VM from vm/boot.sh)
  --scope-vm        boots the VM tier's guest (vm/qemu.py, cached image only: never builds one),
                    creates the job user with linger, measures there, powers it off
  otherwise         this machine, if systemd is its init
bench/scope_probe.py does the timing on that host and answers JSON. A TCG guest (no KVM) runs
everything several times slower than the host: read its numbers as ratios.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, fmt, say, table

PROBE = Path(__file__).resolve().parent / "scope_probe.py"
JOB_USER = "fondation-job"


def local_systemd_problem() -> str | None:
    """Why this machine cannot host the measurement, or None."""
    if not Path("/run/systemd/system").is_dir():
        init = Path("/proc/1/comm").read_text().strip() if Path("/proc/1/comm").exists() else "?"
        return f"systemd is not the init on this machine (PID 1 is {init!r}): no user manager to host scopes"
    return None


def vm_problem() -> str:
    if not (REPO_ROOT / "vm" / "qemu.py").exists():
        return "vm/qemu.py (the VM tier) does not exist yet in this tree"
    return "vm/qemu.py exists: pass --scope-vm to measure in its guest (boots a qemu VM, ~1-3 min)"


def run(*, samples: int, user: str | None, ssh: str | None, vm: bool = False,
        directory: Path | None = None) -> dict[str, Any]:
    args = ["-n", str(samples), *(["--user", user] if user else [])]
    if vm and not ssh:
        return run_in_vm(samples=samples, user=user or JOB_USER, directory=directory)
    if ssh:
        target, argv, stdin = f"ssh: {ssh}", [*shlex.split(ssh), "python3", "-", *args], PROBE.read_bytes()
    else:
        problem = local_systemd_problem()
        if problem is not None:
            reason = f"{problem}; {vm_problem()}"
            say(f"scope: not measured — {reason}")
            return {"measured": False, "reason": reason}
        target, argv, stdin = "this machine", [sys.executable, str(PROBE), *args], b""
    say(f"scope: {samples} samples per variant on {target}" + (f" as {user}" if user else ""))
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=600)
    try:
        probe = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = f"the probe failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-1000:]}"
        say(f"scope: not measured — {reason}")
        return {"measured": False, "reason": reason}
    return {"measured": bool(probe["ms"].get("scope")), "target": target, **probe}


def run_in_vm(*, samples: int, user: str, directory: Path | None) -> dict[str, Any]:
    if not (REPO_ROOT / "vm" / "qemu.py").exists():
        return _not_measured("vm/qemu.py (the VM tier) does not exist in this tree")
    from vm import qemu  # the VM tier's own module (stdlib only)

    image = qemu.Image(qemu.cache_dir() / f"bookworm-{qemu.image_key()}")
    if not image.complete():
        return _not_measured(f"no VM image for the current vm/ in {image.directory}: build it with `vm/boot.sh build`"
                             " (the bench does not build images)")
    say(f"scope: booting the VM tier's guest (vm/qemu.py) to measure {samples} samples per variant as {user}")
    workdir = directory / "scope-vm" if directory else None  # None: vm/qemu.py makes a temporary one
    try:
        with qemu.VirtualMachine(image=image, workdir=workdir) as machine:
            state = machine.wait_until_running()
            uid = machine.ssh(
                f"id -u {user} 2>/dev/null || {{ useradd --system --create-home --home-dir /var/lib/{user} "
                f"--shell /usr/sbin/nologin {user} && id -u {user}; }}", timeout=120).stdout.split()[-1]
            machine.ssh(f"loginctl enable-linger {user}", timeout=120)
            machine.wait_for(f"systemctl is-active user@{uid}.service", lambda out: out.strip() == "active",
                             timeout=120)
            machine.put("/root/scope_probe.py", PROBE.read_text())
            done = machine.ssh(f"python3 /root/scope_probe.py -n {samples} --user {user}", check=False,
                               timeout=1800)
            described = machine.describe()
    except Exception as error:  # the VM tier is someone else's moving part: say what failed
        return _not_measured(f"the VM could not be used: {error!r}")
    try:
        probe = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _not_measured(f"the probe failed in the VM (exit {done.returncode}): {done.stderr[-1000:]}")
    target = f"VM tier guest ({described['accel']}, booted in {described['boot_seconds']} s, state {state})"
    return {"measured": bool(probe["ms"].get("scope")), "target": target, "accel": described["accel"], **probe}


def _not_measured(reason: str) -> dict[str, Any]:
    say(f"scope: not measured — {reason}")
    return {"measured": False, "reason": reason}


def report(result: dict[str, Any]) -> str:
    if not result.get("measured"):
        return f"not measured: {result.get('reason') or result.get('failures')}"
    ms = result["ms"]
    base = ms["plain"]["p50"]
    rows = [[name, d["n"], fmt(d["p50"], digits=1), fmt(d["p95"], digits=1), fmt(d["p99"], digits=1),
             f"+{d['p50'] - base:.1f}"] for name, d in ms.items()]
    text = table(["start → exit of /bin/true", "n", "p50 ms", "p95 ms", "p99 ms", "p50 vs plain"], rows)
    return text + f"\n\non {result['target']}: {result['host']}, {result['systemd']}, load {result['load']}" + (
        f"\nfailures: {result['failures']}" if result.get("failures") else "")
