"""The real Claude Code as a job of the packaged agent, in the production sandbox (systemd-service).

The demo CLI's Claude engine (examples/course-cli/claude.mjs and the Claude Agent SDK, from the
read-only `course-cli` disk the `vm` fixture attaches) runs on the guest's Debian Node 18 against the
fake model (tests/fixtures/fake_anthropic.py), which the guest serves on a dummy interface's address
that job_network_allow opens: jobs get no loopback. The model is the only stand-in. The test prints
the job's time and its unit's peak memory (cgroup memory.peak: systemd 252 has no MemoryPeak).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from fondation_agent.queue.rules import FINISHED_STATUSES as FINISHED
from tests.integration.test_agent_claude_code import CLAUDE_REPO_FILES, COURSE_DOCS, INJECTED
from tests.operator_queue import Queue, summary
from tests.system.conftest import REPO_ROOT
from tests.system.guest import GUEST_LIB, JOB_ENV, GuestAgent, put_job_env, wait_no_job_processes, wait_no_job_units

pytestmark = [pytest.mark.system, pytest.mark.course_cli_disk, pytest.mark.timeout(1200)]
COURSE_CLI = "/opt/course-cli"
MODEL_ADDRESS = "10.77.1.1"  # on a dummy interface: never test_35's 10.77.0.x
MODEL_PORT = 8080
MODEL_LOG = "/run/fondation-test-fake-anthropic.log"
PEAK_FILE = "/run/fondation-test-job-memory-peak"
CLAUDE_REPO = "/srv/repos/claude"
JOB_MEMORY_SAMPLER = """#!/bin/sh
# job_memory.sh CGROUP_DIR OUT: writes "memory.peak highest-anon oom_kills" (bytes, bytes, count) to OUT
# every 0.2 s until the cgroup is gone.
max=0
while stat=$(cat "$1/memory.stat" 2>/dev/null) && peak=$(cat "$1/memory.peak" 2>/dev/null) \\
        && kills=$(awk '$1 == "oom_kill" {print $2}' "$1/memory.events" 2>/dev/null); do
    anon=$(echo "$stat" | awk '$1 == "anon" {print $2}')
    [ "$anon" -gt "$max" ] && max=$anon
    echo "$peak $max $kills" > "$2.new" && mv "$2.new" "$2"
    sleep 0.2
done
"""


@pytest.fixture(scope="module")
def claude_host(agent: GuestAgent) -> Iterator[GuestAgent]:
    vm = agent.vm
    saved = dict(agent.settings)
    vm.scp_to(REPO_ROOT / "tests" / "fixtures" / "fake_anthropic.py", f"{GUEST_LIB}/fake_anthropic.py")
    vm.scp_to(REPO_ROOT / "tests" / "system" / "guest_fake_anthropic.py", f"{GUEST_LIB}/guest_fake_anthropic.py")
    vm.ssh(f"install -d -m 0755 {COURSE_CLI} && mount -o ro -L course-cli {COURSE_CLI}")
    vm.ssh(f"ip link add fj-claude type dummy; ip link set fj-claude up; ip addr add {MODEL_ADDRESS}/32 dev fj-claude")
    # The credential where the job launcher reads it (EnvironmentFile= of the job's unit): a fake key.
    put_job_env(vm, f"ANTHROPIC_API_KEY=sk-ant-test-{secrets.token_hex(8)}\n")
    vm.ssh(f"rm -f {MODEL_LOG}; systemd-run --quiet --unit=fondation-test-fake-anthropic python3 "
           f"{GUEST_LIB}/guest_fake_anthropic.py {MODEL_ADDRESS} {MODEL_PORT} {MODEL_LOG} {JOB_ENV}")
    vm.wait_for(f"cat {MODEL_LOG} 2>/dev/null", lambda out: "listening" in out, timeout=60)
    for path, content in CLAUDE_REPO_FILES.items():
        vm.put(f"{CLAUDE_REPO}/{path}", content)
    vm.ssh(f"set -e; cd {CLAUDE_REPO}; git init -q -b main; git add -A; "
           "git -c user.name=Test -c user.email=test@example.invalid commit -q -m initial; "
           f"chown -R fondation:fondation {CLAUDE_REPO}")
    # The claude_* settings are read once, at start: a restart, not a reload.
    agent.write_config(cli_command=f"/usr/bin/node {COURSE_CLI}/cli.mjs analyze {{repo}} --engine claude",
                       claude_upstream=f"http://{MODEL_ADDRESS}:{MODEL_PORT}", claude_max_retries=0,
                       job_network_allow=[MODEL_ADDRESS], job_timeout=900.0)
    agent.restart()
    vm.ssh("systemctl reload fondation-jobs-network")
    yield agent
    agent.settings = saved
    agent.write_config()
    agent.restart()
    put_job_env(vm)
    vm.ssh(f"systemctl reload fondation-jobs-network; systemctl stop fondation-test-fake-anthropic; "
           f"ip link del fj-claude; umount {COURSE_CLI}; rm -rf {CLAUDE_REPO}", check=False)


def test_the_real_claude_code_writes_a_course_in_the_production_sandbox(claude_host: GuestAgent, queue: Queue):
    vm = claude_host.vm
    started = time.monotonic()
    job_id = queue.enqueue("A course for new contributors", repository=f"file://{CLAUDE_REPO}", maxAttempts=1)
    queue.wait_for(job_id, lambda job: bool(job.get("currentStep")) or job["status"] in FINISHED, timeout=600)
    # The unit's cgroup goes with it: a guest-side loop keeps the last memory.peak (it only grows; page
    # cache included, so it reaches MemoryMax when the 400 MB Claude Code binary is read), the highest
    # anon (what reclaim cannot take back) and the OOM kills.
    unit = f"fondation-job-{job_id}-1.service"
    cgroup = vm.ssh(f"systemctl show -p ControlGroup --value {unit}").stdout.strip()
    assert cgroup, f"{unit} has no cgroup: {summary(queue.get(job_id))}"
    vm.put(f"{GUEST_LIB}/job_memory.sh", JOB_MEMORY_SAMPLER, mode="0755")
    vm.ssh(f"rm -f {PEAK_FILE}; systemd-run --quiet --unit=fondation-test-peak {GUEST_LIB}/job_memory.sh "
           f"/sys/fs/cgroup{cgroup} {PEAK_FILE}")
    job = queue.wait_finished(job_id, timeout=900)
    seconds = time.monotonic() - started
    wait_no_job_units(vm)
    peak, anon, oom_kills = (int(n) for n in vm.read(PEAK_FILE).split())
    requests = [json.loads(line) for line in vm.read(MODEL_LOG).splitlines()[1:]]
    print(f"\nreal Claude Code in the systemd-service sandbox, six steps: {seconds:.1f} s from enqueue to done; "
          f"job unit's memory.peak {peak / 2**20:.0f} MiB (MemoryMax={claude_host.settings['memory_max']}, page "
          f"cache included), highest anon {anon / 2**20:.0f} MiB, {oom_kills} OOM kills; "
          f"{len(requests)} Messages API requests")
    assert oom_kills == 0
    assert job["status"] == "completed", f"{summary(job)}\n{claude_host.diagnostics()}"
    assert (job["currentStep"], job["totalSteps"]) == (6, 6)
    docs = {(d["kind"], d["slug"]): d for d in queue.docs(job_id)}
    assert sorted(docs) == COURSE_DOCS
    assert docs["chapter", "chapter_1_queue"]["title"] == "Reviewed chapter 1 queue", "the reviewed chapter wins"
    # Claude Code spoke only the Messages API, with the job.env key, and never saw CLAUDE.md as instructions.
    assert {(r["path"], r["key_ok"]) for r in requests} == {("/v1/messages?beta=true", True)}
    assert sum(1 for r in requests if "Write" in r["tools"]) >= 12, "a tool_use and a closing turn per step"
    assert not any(INJECTED in json.dumps(r["body"]) for r in requests)
    wait_no_job_processes(vm)
