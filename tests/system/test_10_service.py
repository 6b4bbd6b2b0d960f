"""The packaged service on a real systemd: READY, watchdog, a clean status, a job end to end."""

from __future__ import annotations

import json

import pytest

from tests.operator_queue import Queue, summary
from tests.system.guest import UNIT, GuestAgent

pytestmark = pytest.mark.system
DEMO_CLI = "/usr/share/fondation-agent/examples/course-cli/cli.mjs"


def test_service_is_ready_with_its_watchdog(agent: GuestAgent) -> None:
    state = agent.wait_active()
    assert state["ActiveState"] == "active" and state["SubState"] == "running", state
    assert state["NRestarts"] == "0", state
    assert state["WatchdogUSec"] not in ("0", "infinity", ""), state
    assert state["StatusText"].strip(), state  # the agent's one STATUS= line
    vm = agent.vm
    assert vm.ssh(f"ps -o user= -p {state['MainPID']}").stdout.strip() == "fondation"
    health = vm.ssh("curl -sS -m 10 -w '\\n%{http_code}' http://127.0.0.1:9810/health").stdout.splitlines()
    assert health[-1] == "200", health
    assert json.loads("\n".join(health[:-1]))


def test_status_is_clean(agent: GuestAgent) -> None:
    done = agent.vm.ssh(f"systemctl status {UNIT} --no-pager -l -n 50", check=False)
    assert done.returncode == 0, done.stdout
    assert "Active: active (running)" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout, done.stdout
    # Its lines there (and all of this boot's) hold nothing at priority err or worse.
    errors = agent.journal("-b", "-p", "err")
    assert errors.strip() == "", errors


def test_a_job_runs_end_to_end_in_a_transient_service(agent: GuestAgent, queue: Queue, journal_cursor: str) -> None:
    job_id = queue.enqueue("succeed")
    job = queue.wait_finished(job_id)
    assert job["status"] == "completed", summary(job)
    assert {doc["slug"] for doc in queue.docs(job_id)} >= {"index"}
    lines = agent.journal(f"JOB_ID={job_id}", after=journal_cursor)
    assert "sandbox=systemd-service" in lines, lines
    assert "fondation-job-" in lines, lines


def test_the_packaged_demo_cli_makes_a_course(agent: GuestAgent, queue: Queue) -> None:
    assert agent.vm.ssh(f"test -f {DEMO_CLI}", check=False).returncode == 0, f"{DEMO_CLI} is not in the package"
    original = agent.settings["cli_command"]
    agent.reload(cli_command=f"node {DEMO_CLI} analyze {{repo}} --prompt {{prompt}}")
    try:
        job_id = queue.enqueue("a course about the demo repository")
        job = queue.wait_finished(job_id)
        assert job["status"] == "completed", summary(job)
        docs = queue.docs(job_id)
        assert {doc["kind"] for doc in docs} == {"yaml", "toc", "chapter", "tutorial"}, docs
        assert any("util.py" in doc["title"] for doc in docs), [doc["title"] for doc in docs]
    finally:
        agent.reload(cli_command=original)
