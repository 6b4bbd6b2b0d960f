"""`journalctl -u fondation-agent JOB_ID=<id>` shows one job, with the CLI's own lines."""

from __future__ import annotations

import secrets

import pytest

from tests.system.guest import GuestAgent, Queue

pytestmark = pytest.mark.system


def test_journal_lines_of_one_job(agent: GuestAgent, queue: Queue) -> None:
    marker = f"marker-{secrets.token_hex(6)}"
    other = queue.enqueue("succeed")
    job_id = queue.enqueue(f"relay:{marker}")
    queue.wait_completed(other)
    queue.wait_completed(job_id)
    lines = agent.vm.ssh(f"journalctl -u fondation-agent JOB_ID={job_id} --no-pager -o cat").stdout
    for step in range(1, 7):
        assert f"relayed line {step} {marker}" in lines, lines
    assert "job claimed" in lines and "job ended" in lines, lines
    assert other not in lines
    # Every line of that query carries the job's id as a field.
    fields = agent.vm.ssh(f"journalctl -u fondation-agent JOB_ID={job_id} --no-pager -o export "
                          "| grep -c '^JOB_ID='").stdout.strip()
    count = agent.vm.ssh(f"journalctl -u fondation-agent JOB_ID={job_id} --no-pager -o cat | wc -l").stdout.strip()
    assert int(fields) >= 8 and int(fields) <= int(count), (fields, count)
    # The other job's lines are its own.
    assert marker not in agent.vm.ssh(f"journalctl -u fondation-agent JOB_ID={other} --no-pager -o cat").stdout
