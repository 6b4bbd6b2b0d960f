#!/usr/bin/env python3
"""localconvex for the Molecule scenario, left running between Molecule's steps.

    localconvex.py start STATE_DIR   # prints {"pid", "port", "url"}; also in STATE_DIR/localconvex.json
    localconvex.py stop STATE_DIR

Starts localconvex/server.ts (as localconvex/launcher.py does, but detached: the launcher stops its
servers when Python exits) on 127.0.0.1:<free port>, which the VM reaches as 10.0.2.2:<port>. The
worker token and the admin key (for verify.yml's `fondation-agent enqueue | job`) are made here, into
STATE_DIR/worker-token and STATE_DIR/admin-key (0600), and reach the server through its
environment, never its command line. FONDATION_ACCEPT_ANY_REPOSITORY_URL=1 lets the test queue a
file:// repository inside the VM. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
READY = re.compile(r"^localconvex ready on (http://127\.0\.0\.1:(\d+))$", re.MULTILINE)


def secret_file(path: Path) -> str:
    """A random secret kept in `path` (0600), made on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(24) + "\n")
    return path.read_text().strip()


def start(state_dir: Path) -> dict:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "FONDATION_WORKER_TOKEN": secret_file(state_dir / "worker-token"),
           "CONVEX_ADMIN_KEY": secret_file(state_dir / "admin-key"),
           "FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1"}
    log = state_dir / "localconvex.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [shutil.which("node") or "node", "--import", "tsx", str(REPO_ROOT / "localconvex" / "server.ts"),
             "--address", "127.0.0.1:0", "--state", str(state_dir / "localconvex-state.json")],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this script and Molecule's ansible-playbook runs
        )
    deadline = time.monotonic() + 60
    while not (match := READY.search(log.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            sys.exit(f"localconvex did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    info = {"pid": proc.pid, "url": match.group(1), "port": int(match.group(2))}
    (state_dir / "localconvex.json").write_text(json.dumps(info) + "\n")
    return info


def stop_pid(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.killpg(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(state_dir: Path) -> None:
    info_file = state_dir / "localconvex.json"
    if not info_file.exists():
        return
    pid = json.loads(info_file.read_text())["pid"]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        command = b""
    if b"localconvex/server.ts" in command:  # never a process that merely reuses the pid
        stop_pid(pid)
    info_file.unlink()


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    state_dir = Path(sys.argv[2])
    if sys.argv[1] == "start":
        print(json.dumps(start(state_dir)))
    else:
        stop(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
