"""The first program of a job's unit: reads the job's argv and environment from its spec file, starts
the relay to the Claude gateway (relay.py) and execs the CLI. The launcher writes the spec (owned by
the job's user, mode 0400) so that neither the prompt nor any value of the job's environment is a unit
property (ExecStart=, Environment=), which every local user can read with `systemctl show`; and JSON
carries any text, newlines included.

Before anything of the job runs, it claims the attempt's gateway token for the job's user (relay.claim):
from then on the gateway refuses that token from any other user, another job's included.

The relay listens before the CLI starts and runs in a child of this process, which becomes the CLI:
the kernel kills it when the CLI ends (PR_SET_PDEATHSIG), and the unit's stop kills its cgroup anyway.
It holds none of the CLI's standard streams, whose end is the job's end for the agent.

Runs as the job user, inside the sandbox; imports nothing of the agent but the relay.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys

from fondation_agent.sandbox import relay

PR_SET_PDEATHSIG = 1


def start_relay(listener: socket.socket, target: str) -> None:
    """Forks the relay's process (it serves `listener` until this process, the CLI, is gone)."""
    parent = os.getpid()
    child = os.fork()
    if child:
        listener.close()  # the relay's alone: the CLI never holds it
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == parent:  # else the CLI already ended, before the kernel could be asked
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            asyncio.run(relay.serve(listener, target))
    finally:
        os._exit(0)


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    argv, environment = spec["argv"], {**os.environ, **spec["env"]}
    token = spec["env"].get("ANTHROPIC_API_KEY")
    if token:  # the attempt's gateway token, tied to this job's user before the CLI (the job's code) runs
        try:
            relay.claim(spec["relay"]["socket"], token)
        except relay.ClaimRefused as refusal:
            sys.exit(f"fondation-agent job_exec: {refusal}")
    start_relay(relay.listen(spec["relay"]["port"]), spec["relay"]["socket"])
    os.execvpe(argv[0], argv, environment)  # noqa: S606 (the CLI the operator configured, checked by the launcher)


if __name__ == "__main__":
    main(sys.argv[1])
