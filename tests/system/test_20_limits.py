"""A job's limits are systemd's (MemoryMax, TasksMax, RuntimeMaxSec): the job fails, nothing else does."""

from __future__ import annotations

import re
import threading
import time

import pytest

from fondation_agent.queue.rules import ACTIVE_STATUSES
from tests.operator_queue import Queue, summary
from tests.system.guest import GuestAgent, job_units, wait_no_job_processes

pytestmark = pytest.mark.system


def assert_agent_unharmed(agent: GuestAgent, before: dict[str, str]) -> None:
    after = agent.show()
    assert after["ActiveState"] == "active" and after["SubState"] == "running", after
    assert after["MainPID"] == before["MainPID"], (before, after)
    assert after["NRestarts"] == before["NRestarts"], (before, after)
    assert agent.vm.ssh("systemctl is-system-running", check=False).stdout.strip() == "running"
    assert job_units(agent.vm) == ""
    wait_no_job_processes(agent.vm)


def test_a_job_past_memory_max_fails_as_oom(agent: GuestAgent, queue: Queue) -> None:
    before = agent.show()
    limit = agent.settings["memory_max"]
    job_id = queue.enqueue("oom:1024", maxAttempts=1)
    job = queue.wait_finished(job_id, timeout=300)
    assert job["status"] == "failed", summary(job)
    assert job["errorKind"] == "oom", summary(job)
    assert f"MemoryMax={limit}" in job["error"], summary(job)
    assert queue.docs(job_id) == []
    assert "Memory cgroup out of memory" in agent.vm.ssh("dmesg").stdout
    assert_agent_unharmed(agent, before)


def test_a_fork_bomb_is_contained_by_tasks_max(agent: GuestAgent, queue: Queue) -> None:
    before = agent.show()
    tasks_max = agent.settings["tasks_max"]
    job_id = queue.enqueue("forkbomb:20", maxAttempts=1)
    queue.wait_for(job_id, lambda job: job["status"] in ACTIVE_STATUSES and job.get("currentStep"), timeout=180)

    # While it rages: the guest answers, and the unit never holds more than TasksMax tasks.
    latencies, peaks, maxima = [], [], set()
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            started = time.monotonic()
            out = agent.vm.ssh("for d in /sys/fs/cgroup/fondation.slice/fondation-jobs.slice/fondation-job-*.service; "
                               "do echo $(cat $d/pids.current $d/pids.max); done 2>/dev/null",
                               check=False, timeout=60).stdout
            latencies.append(time.monotonic() - started)
            for line in out.splitlines():
                if len(line.split()) == 2:
                    current, most = line.split()
                    peaks.append(int(current))
                    maxima.add(most)
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        job = queue.wait_finished(job_id, timeout=300)
    finally:
        finished.set()
        watcher.join(timeout=90)
    assert job["status"] == "failed", summary(job)
    assert job["errorKind"] != "oom", summary(job)
    assert "contained" in job["error"], summary(job)
    # The kernel charges a fork by adding to pids.current, then takes the charge back if that went
    # past pids.max: a read can catch one such passing charge per CPU forking at that instant.
    ceiling = tasks_max + agent.vm.cpus
    assert peaks, "never saw the job's unit"
    assert max(peaks) <= ceiling, peaks
    assert max(latencies) < 30, latencies
    report = agent.journal(f"JOB_ID={job_id}")
    assert maxima == {str(tasks_max)}, maxima
    match = re.search(r"fork bomb report: (\d+) processes saw fork", report)
    assert match, report
    assert int(match.group(1)) > 0, match.group()  # the limit was really hit
    assert_agent_unharmed(agent, before)


def test_a_job_that_fills_its_disk_fails_as_disk_limit_and_takes_nothing_from_the_host(
        agent: GuestAgent, queue: Queue) -> None:
    before = agent.show()
    host_free = int(agent.vm.ssh("df --output=avail -B1 / | tail -1").stdout)
    job_id = queue.enqueue("fill", maxAttempts=2)
    job = queue.wait_finished(job_id, timeout=300)
    assert job["status"] == "failed" and job["errorKind"] == "disk_limit", summary(job)
    assert job["attempts"] == 1, summary(job)  # its own fault: not retried
    log = agent.journal(f"JOB_ID={job_id}")
    assert "fallocate 200G: exit 1" in log, log
    for place in ("repo", "home", "/tmp"):  # all on the same disk_max: the first fills it for the others
        assert re.search(rf"fill \S*{place}\S*: \d+ MiB, then No space left on device", log), log
    # Its disk goes with its workspace, which the agent removes after it told Convex: nothing stays
    # mounted or reserved, and the host has its space back.
    agent.wait_journal(f"job ended job_id={job_id}", timeout=120)
    assert agent.vm.ssh("findmnt -rn -o TARGET | grep -c /var/lib/fondation-agent/workspaces || true"
                        ).stdout.strip() == "0"
    assert agent.vm.ssh("find /var/lib/fondation-agent/disks -name '*.img' | wc -l").stdout.strip() == "0"
    assert int(agent.vm.ssh("df --output=avail -B1 / | tail -1").stdout) > host_free - 64 * 1024**2
    assert_agent_unharmed(agent, before)


def test_a_job_past_its_runtime_fails_as_timeout(agent: GuestAgent, queue: Queue) -> None:
    before = agent.show()
    original = agent.settings["job_timeout"]
    agent.reload(job_timeout=10.0)
    try:
        started = time.monotonic()
        job_id = queue.enqueue("hang", maxAttempts=1)
        job = queue.wait_finished(job_id, timeout=240)
        assert job["status"] == "failed", summary(job)
        assert job["errorKind"] == "timeout", summary(job)
        assert "job_timeout" in job["error"], summary(job)
        assert time.monotonic() - started < 200
    finally:
        agent.reload(job_timeout=original)
    assert_agent_unharmed(agent, before)
