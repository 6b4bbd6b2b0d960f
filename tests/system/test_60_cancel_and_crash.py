"""Cancel, and an agent killed mid-job, on the real systemd: a job's unit goes whole, whatever its processes do."""

from __future__ import annotations

import pytest

from tests.operator_queue import Queue, summary
from tests.system.guest import UNIT, GuestAgent, job_units, wait_no_job_processes, wait_no_job_units

pytestmark = pytest.mark.system


def running_step(agent: GuestAgent, queue: Queue, job_id: str) -> None:
    queue.wait_for(job_id, lambda job: job["status"] == "analyzing" and job.get("currentStep"), timeout=180)
    # The output directory shows step 1 before the CLI prints anything: wait for its own first line,
    # after which the hanging CLIs write nothing more (so none dies of SIGPIPE when the agent does).
    agent.vm.wait_for(f"journalctl -u {UNIT} JOB_ID={job_id} --no-pager -o cat",
                      lambda out: "[PROGRESS] Step 1/6" in out, timeout=120)


def test_cancel_stops_a_unit_whose_processes_ignore_sigterm(agent: GuestAgent, queue: Queue) -> None:
    before = agent.show()
    job_id = queue.enqueue("ignore-term", maxAttempts=1)
    running_step(agent, queue, job_id)
    assert f"fondation-job-{job_id}-1" in job_units(agent.vm)

    queue.client.mutation("operator:cancel", {"jobId": job_id})
    job = queue.wait_finished(job_id, timeout=90)
    assert job["status"] == "canceled", summary(job)
    wait_no_job_units(agent.vm)
    wait_no_job_processes(agent.vm)
    assert agent.show()["MainPID"] == before["MainPID"]


def test_a_killed_agent_is_restarted_and_stops_the_unit_it_orphaned(agent: GuestAgent, queue: Queue) -> None:
    vm = agent.vm
    restarts = int(agent.show()["NRestarts"])
    # A CLI that writes nothing more: a writing one would die of SIGPIPE with the agent, ending its unit.
    job_id = queue.enqueue("hang", maxAttempts=1)
    running_step(agent, queue, job_id)
    orphan = f"fondation-job-{job_id}-1"
    assert orphan in job_units(vm)
    cursor = agent.cursor()

    # The job is a unit of its own (started by the launcher), not in the service's cgroup: SIGKILL to
    # the agent leaves it running, and only the restarted agent can stop it.
    vm.ssh(f"systemctl kill --kill-whom=main --signal=SIGKILL {UNIT}")
    vm.wait_for(f"systemctl show {UNIT} -p NRestarts --value",
                lambda out: out.strip().isdigit() and int(out) > restarts, timeout=120)
    state = agent.wait_active(timeout=180)
    assert int(state["NRestarts"]) == restarts + 1, state
    agent.wait_journal("stopped leftover jobs", after=cursor, timeout=120)
    assert orphan not in job_units(vm)
    wait_no_job_processes(vm)

    # Its lease ran out with its only attempt: the queue fails the job, saying why.
    job = queue.wait_finished(job_id, timeout=300)
    assert job["status"] == "failed" and job["errorKind"] == "lease_expired", summary(job)
    wait_no_job_units(vm)
