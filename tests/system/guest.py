"""Helpers of the VM tier: the packaged agent as installed in the guest (the queue on the host is
tests/operator_queue.py's)."""

from __future__ import annotations

import re
import secrets
import shlex
import time
from typing import Any

import tomli_w

from vm.qemu import VirtualMachine

UNIT = "fondation-agent.service"
CONFIG = "/etc/fondation-agent/agent.toml"
TOKEN_FILE = "/etc/fondation-agent/worker-token"
# The Claude gateway: the one reader of the credential (the session's fake key, root:fondation-gateway 0640).
GATEWAY_UNIT = "fondation-agent-gateway.service"
GATEWAY_SETTINGS = "/etc/fondation-agent/gateway.toml"
JOB_ENV = "/etc/fondation-agent/job.env"
CLAUDE_KEY = f"sk-ant-test-{secrets.token_hex(12)}"
GUEST_LIB = "/usr/local/lib/fondation-test"
GUEST_REPO = "/srv/repos/demo"
# The job-user pool as a comma-separated list, for pgrep -u (evaluated by the guest's shell).
POOL_USERS = "$(getent passwd | cut -d: -f1 | grep -E '^fondation-job-[0-9]+$' | paste -sd, -)"
REPO_URL = f"file://{GUEST_REPO}"


JOB_UNITS = "systemctl list-units --all --plain --no-legend 'fondation-job-*.service'"


def job_units(vm: VirtualMachine) -> str:
    """The fondation-job-* services PID 1 still has loaded (there should be none between jobs)."""
    return vm.ssh(JOB_UNITS, check=False).stdout.strip()


def wait_no_job_units(vm: VirtualMachine, timeout: float = 30) -> None:
    vm.wait_for(JOB_UNITS, lambda out: out.strip() == "", timeout=timeout)


def wait_no_job_processes(vm: VirtualMachine, timeout: float = 30) -> None:
    """No process runs as any job user: nothing of a job outlives its unit."""
    vm.wait_for(f"pgrep -a -u {POOL_USERS} || true", lambda out: out.strip() == "", timeout=timeout)


def exposure(vm: VirtualMachine, unit: str) -> float:
    """systemd-analyze security's overall exposure of a unit (lower is better)."""
    out = vm.ssh(f"systemd-analyze security --no-pager {unit}", check=False).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    return float(match.group(1))


def configure_gateway(vm: VirtualMachine, **settings: str) -> None:
    """gateway.toml with these settings (none: the package's defaults), then a restart of the gateway."""
    vm.put(GATEWAY_SETTINGS, tomli_w.dumps(settings), mode="0640", owner="root:fondation-gateway")
    vm.ssh(f"systemctl restart {GATEWAY_UNIT}", timeout=120)  # Type=notify: back once it listens
    vm.ssh(f"systemctl is-active {GATEWAY_UNIT}")


class GuestAgent:
    """fondation-agent.service in the guest: its config, its unit's state, its journal."""

    def __init__(self, vm: VirtualMachine, settings: dict[str, Any]):
        self.vm = vm
        self.settings = dict(settings)

    # -- config ---------------------------------------------------------------------------------

    def config_text(self) -> str:
        return tomli_w.dumps(self.settings)

    def write_config(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.vm.put(CONFIG, self.config_text(), mode="0640", owner="root:fondation")
        self.vm.ssh(["fondation-agent", "check-config", CONFIG])

    def reload(self, **changes: Any) -> None:
        """New settings by SIGHUP (systemctl reload); returns once the agent logged the reload."""
        cursor = self.cursor()
        self.write_config(**changes)
        self.vm.ssh(f"systemctl reload {UNIT}")
        self.wait_journal("config reloaded", after=cursor, timeout=60)

    # -- the unit -------------------------------------------------------------------------------

    def show(self, *properties: str) -> dict[str, str]:
        names = properties or ("ActiveState", "SubState", "NRestarts", "MainPID", "WatchdogUSec", "StatusText")
        out = self.vm.ssh(f"systemctl show {UNIT} " + " ".join(f"-p {name}" for name in names)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def restart(self) -> None:
        self.vm.ssh(f"systemctl restart {UNIT}", timeout=300)
        self.wait_active()

    def wait_active(self, timeout: float = 300) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.show()
            if state.get("ActiveState") == "active" and state.get("SubState") == "running":
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{UNIT} not active after {timeout} s: {state}\n{self.diagnostics()}")
            time.sleep(1)

    def status(self) -> str:
        return self.vm.ssh(f"systemctl status {UNIT} --no-pager -l -n 30", check=False).stdout

    def diagnostics(self) -> str:
        """The unit's status and its last journal lines, for failure messages."""
        journal = self.vm.ssh(f"journalctl -u {UNIT} -b --no-pager -n 80 -o short-precise", check=False).stdout
        return f"--- systemctl status ---\n{self.status()}\n--- journal ---\n{journal}"

    # -- journal --------------------------------------------------------------------------------

    def cursor(self) -> str:
        out = self.vm.ssh("journalctl --show-cursor -n 0 -q --no-pager", check=False).stdout
        for line in out.splitlines():
            if line.startswith("-- cursor: "):
                return line[len("-- cursor: "):]
        return ""

    def journal(self, *matches: str, after: str = "", output: str = "cat", extra: str = "") -> str:
        command = ["journalctl", "--no-pager", "-q", "-u", UNIT, "-o", output, *matches]
        if after:
            command.append(f"--after-cursor={after}")
        return self.vm.ssh(shlex.join(command) + (f" {extra}" if extra else ""), check=False, timeout=120).stdout

    def wait_journal(self, text: str, *, after: str = "", timeout: float = 60) -> str:
        return self.vm.wait_for(
            shlex.join(["journalctl", "--no-pager", "-q", "-u", UNIT, "-o", "cat",
                        *([f"--after-cursor={after}"] if after else [])]),
            lambda out: text in out, timeout=timeout)
