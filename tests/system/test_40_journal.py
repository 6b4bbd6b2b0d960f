"""`journalctl -u fondation-agent JOB_ID=<id>` shows one job, with the CLI's own lines."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.operator_queue import Queue
from tests.system.guest import GuestAgent

pytestmark = pytest.mark.system


def test_journal_lines_of_one_job(agent: GuestAgent, queue: Queue) -> None:
    marker = f"marker-{secrets.token_hex(6)}"
    other = queue.enqueue("succeed")
    job_id = queue.enqueue(f"relay:{marker}")
    queue.wait_completed(other)
    queue.wait_completed(job_id)
    agent.wait_journal(f"job ended job_id={job_id}", timeout=120)  # after Convex heard: the workspace first
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


def test_the_clis_json_log_reads_as_text_with_its_priorities(agent: GuestAgent, queue: Queue) -> None:
    marker = f"marker-{secrets.token_hex(6)}"
    job_id = queue.enqueue(f"pino:{marker}")
    queue.wait_completed(job_id)
    exported = agent.vm.ssh(f"journalctl -u fondation-agent JOB_ID={job_id} STREAM=stdout --no-pager -o json").stdout
    entries = [json.loads(line) for line in exported.splitlines()]
    def priority(text: str) -> str:
        # MESSAGE is the CLI's text, then the agent's own context (job_id=… stream=stdout …).
        found = [entry["PRIORITY"] for entry in entries
                 if entry["MESSAGE"].startswith(f"{text} ") and f" job_id={job_id} " in entry["MESSAGE"]]
        assert len(found) == 1, (text, [entry["MESSAGE"] for entry in entries])
        return found[0]

    assert priority(f'info line {marker} detail="all fine"') == "6"
    assert priority(f"warn line {marker}") == "4"
    assert priority(f'error line {marker} error="something broke"') == "3"
    assert priority(f"fatal line {marker}") == "2"
    assert priority(f"colored line {marker}") == "6", "escape sequences stripped"
    assert priority("[FONDATION_STEP_6/6] Creating tutorials step=6/6") == "6"
    assert not any(entry["MESSAGE"].startswith("{") for entry in entries), "no raw JSON in the journal"
