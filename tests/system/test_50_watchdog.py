"""A main loop that hangs stops sending WATCHDOG=1: systemd kills and restarts the agent."""

from __future__ import annotations

import shlex

import pytest

from tests.operator_queue import Queue
from tests.system.guest import UNIT, GuestAgent

pytestmark = pytest.mark.system
DROP_IN = f"/etc/systemd/system/{UNIT}.d/50-system-test-hang.conf"
HANG_FILE = "/run/fondation-system-test-hang"


def test_a_hung_main_loop_is_restarted_by_the_watchdog(agent: GuestAgent, queue: Queue) -> None:
    vm = agent.vm
    vm.put(DROP_IN, f"[Service]\nEnvironment=FONDATION_AGENT_TEST_HANG_FILE={HANG_FILE}\nWatchdogSec=15s\n")
    try:
        vm.ssh(f"rm -f {HANG_FILE}; systemctl daemon-reload && systemctl restart {UNIT}", timeout=300)
        before = agent.wait_active()
        assert before["WatchdogUSec"] == "15s", before
        cursor = agent.cursor()
        vm.ssh(f"touch {HANG_FILE}")
        agent.vm.wait_for(f"systemctl show {UNIT} -p NRestarts --value",
                          lambda out: out.strip().isdigit() and int(out) > int(before["NRestarts"]), timeout=120)
        vm.ssh(f"rm -f {HANG_FILE}")
        after = agent.wait_active()
        assert after["MainPID"] != before["MainPID"], (before, after)
        # What the hung process logged, by its PID: a line journald takes in after the process died
        # (a busy TCG guest) has no unit to be found by (-u), but it keeps the sender's _PID.
        hung = vm.ssh(shlex.join(["journalctl", "--no-pager", "-q", "-o", "cat", f"_PID={before['MainPID']}",
                                  f"--after-cursor={cursor}"]), check=False).stdout
        lines = agent.journal(after=cursor)
        assert "main loop hanging on purpose" in hung, (hung, lines)
        assert "Watchdog timeout" in lines, lines
        # The restarted agent exports systemd's count (FondationAgentRestarting alerts on it).
        metrics = vm.wait_for("curl -sS -m 10 http://127.0.0.1:9810/metrics",
                              lambda out: "fondation_agent_service_restarts" in out, timeout=60)
        assert f"fondation_agent_service_restarts {float(after['NRestarts'])}" in metrics, metrics
    finally:
        vm.ssh(f"rm -f {HANG_FILE} {DROP_IN}; systemctl daemon-reload && systemctl restart {UNIT}", timeout=300)
    state = agent.wait_active()
    assert state["WatchdogUSec"] != "15s", state
    job_id = queue.enqueue("succeed")
    queue.wait_completed(job_id)
