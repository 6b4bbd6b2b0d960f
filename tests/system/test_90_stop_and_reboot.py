"""`systemctl stop` drains the running job; after a reboot the service is back. Runs last (reboots)."""

from __future__ import annotations

import time

import pytest

from fondation_agent.queue.rules import ACTIVE_STATUSES
from tests.operator_queue import Queue, summary
from tests.system.guest import UNIT, GuestAgent

pytestmark = pytest.mark.system


def test_stop_drains_the_running_job(agent: GuestAgent, queue: Queue) -> None:
    vm = agent.vm
    job_id = queue.enqueue("slow:24", maxAttempts=1)
    queue.wait_for(job_id, lambda job: job["status"] in ACTIVE_STATUSES and (job.get("currentStep") or 0) >= 1,
                   timeout=180)
    cursor = agent.cursor()
    vm.ssh(f"systemctl stop --no-block {UNIT}")
    # Draining: the unit is deactivating while the job goes on.
    vm.wait_for(f"systemctl show {UNIT} -p ActiveState --value", lambda out: out.strip() == "deactivating",
                timeout=30, interval=0.5)
    assert queue.get(job_id)["status"] in ACTIVE_STATUSES
    job = queue.wait_finished(job_id, timeout=300)
    assert job["status"] == "completed", summary(job)
    assert queue.docs(job_id)
    vm.wait_for(f"systemctl show {UNIT} -p ActiveState --value", lambda out: out.strip() in ("inactive", "failed"),
                timeout=120)
    state = agent.show("ActiveState", "Result")
    assert state == {"ActiveState": "inactive", "Result": "success"}, state
    lines = agent.journal(after=cursor)
    assert "draining" in lines, lines
    assert "agent stopped" in lines, lines


def test_after_a_reboot_the_service_is_back(agent: GuestAgent, queue: Queue) -> None:
    vm = agent.vm
    assert vm.ssh(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    vm.reboot()
    assert vm.wait_until_running() == "running", vm.ssh("systemctl --failed", check=False).stdout
    state = agent.wait_active(timeout=180)
    assert state["NRestarts"] == "0", state
    started = time.monotonic()
    job_id = queue.enqueue("succeed")
    queue.wait_completed(job_id)
    assert time.monotonic() - started < 180
