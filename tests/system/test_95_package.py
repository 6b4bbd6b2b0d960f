"""The package's life on a host: an upgrade drains the running job and restarts the service; remove
stops it; purge removes what the package created. Runs last: it uninstalls the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.operator_queue import Queue, summary
from tests.system.guest import UNIT, GuestAgent, wait_no_job_processes, wait_no_job_units

pytestmark = pytest.mark.system
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y"


def apt(agent: GuestAgent, arguments: str) -> None:
    done = agent.vm.ssh(f"{APT} {arguments}", check=False, timeout=900)
    assert done.returncode == 0, f"apt-get {arguments}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def exists(agent: GuestAgent, path: str) -> bool:
    return agent.vm.ssh(f"test -e {path}", check=False).returncode == 0


def test_an_upgrade_drains_the_running_job_then_restarts(agent: GuestAgent, queue: Queue, deb: Path) -> None:
    before = agent.wait_active()
    job_id = queue.enqueue("slow:24", maxAttempts=1)
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"), timeout=180)
    cursor = agent.cursor()

    # A reinstall runs the upgrade path of the maintainer scripts (postinst configure <old version>).
    apt(agent, f"install --reinstall /root/{deb.name}")
    # The restart's stop waited for the drain: the job was finished before apt returned.
    job = queue.get(job_id)
    assert job["status"] == "completed" and job["attempts"] == 1, summary(job)
    assert queue.docs(job_id)
    after = agent.wait_active()
    assert after["MainPID"] != before["MainPID"], (before, after)
    lines = agent.journal(after=cursor)
    assert "draining" in lines and "agent stopped" in lines, lines
    queue.wait_completed(queue.enqueue("succeed"))


def test_remove_stops_the_service_and_purge_removes_what_the_package_created(agent: GuestAgent) -> None:
    vm = agent.vm
    apt(agent, "remove fondation-agent")
    assert vm.ssh(f"systemctl is-active {UNIT}", check=False).stdout.strip() == "inactive"
    assert not exists(agent, "/usr/bin/fondation-agent") and not exists(agent, "/opt/venvs/fondation-agent")
    assert exists(agent, "/etc/fondation-agent/agent.toml"), "remove keeps the configuration"
    wait_no_job_units(vm)
    wait_no_job_processes(vm)

    apt(agent, "purge fondation-agent")
    for path in ("/etc/fondation-agent", "/var/lib/fondation-agent", "/run/fondation-jobs-launcher",
                 "/run/fondation-jobs-launcher.sock", f"/usr/lib/systemd/system/{UNIT}"):
        assert not exists(agent, path), f"{path} survived the purge"
    assert "fondation-agent" not in vm.ssh("dpkg -l", check=False).stdout
    # Debian policy: system users stay (files they own may remain anywhere); docs/operations.md says so.
    assert vm.ssh("id -u fondation && id -u fondation-job-1", check=False).returncode == 0
