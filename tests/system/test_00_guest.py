"""The guest itself: what the other system tests rely on (no package needed)."""

from __future__ import annotations

import json
import re

import pytest

from localconvex.launcher import LocalConvex
from vm.qemu import GUEST_FORWARD_ADDRESS, GUEST_HOST_ADDRESS, VirtualMachine

pytestmark = pytest.mark.system


def test_systemd_runs_on_cgroup_v2(vm: VirtualMachine) -> None:
    assert vm.ssh("systemctl is-system-running").stdout.strip() == "running"
    assert vm.ssh("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    controllers = set(vm.read("/sys/fs/cgroup/cgroup.controllers").split())
    assert {"cpu", "memory", "pids"} <= controllers


def test_a_memory_limited_scope_is_oom_killed(vm: VirtualMachine) -> None:
    """The kernel and systemd of the image enforce MemoryMax (what nspawn on this host could not)."""
    done = vm.ssh(
        "systemd-run --scope --quiet --unit=probe-oom -p MemoryMax=64M -p MemorySwapMax=0 "
        "python3 -c 'x = [bytearray(b\"x\" * 2**20) for _ in range(512)]'; echo status=$?",
        check=False, timeout=180,
    )
    assert "status=137" in done.stdout, done  # SIGKILL
    result = vm.ssh("systemctl show probe-oom.scope -p Result --value; systemctl reset-failed probe-oom.scope",
                    check=False).stdout
    assert "oom-kill" in result or result.strip() == "", result  # gone when it ended without failing state
    assert "Memory cgroup out of memory" in vm.ssh("dmesg").stdout


def test_guest_reaches_the_forwarded_port_and_nothing_else(vm: VirtualMachine, localconvex: LocalConvex) -> None:
    # An anonymous call of a user function: the app's own answer proves the guest reaches it.
    body = json.dumps({"path": "jobs:stats", "args": {}, "format": "json"})
    query = f"curl -sS -m 20 -H 'Content-Type: application/json' -d '{body}' http://%s:{localconvex.port}/api/query"
    out = vm.ssh(query % GUEST_FORWARD_ADDRESS).stdout
    assert json.loads(out)["errorData"]["code"] == "unauthorized", out
    # restrict=on: not even the host's loopback, the same port, is reachable but through the guestfwd.
    assert vm.ssh(query % GUEST_HOST_ADDRESS, check=False).returncode != 0
    routes = vm.ssh("ip route").stdout
    assert "default" not in routes, routes
    assert re.search(r"10\.0\.2\.0/24", routes)
