"""The real Claude Code as a job of the packaged agent, in the production sandbox (systemd-service).

The demo CLI's Claude engine (examples/course-cli/claude.mjs and the Claude Agent SDK, from the
read-only `course-cli` disk the `vm` fixture attaches) runs on the guest's Debian Node 18 against the
fake model (tests/fixtures/fake_anthropic.py), which the guest serves on a dummy interface's address:
the Claude gateway's upstream, which the job (a network namespace of its own) cannot reach itself. The
job talks to its relay with a token of its own; the gateway alone holds the key. The model is the only
stand-in. While the job runs, a guest-side loop records its unit's memory and the environments of all
its processes (/proc/<pid>/environ); the test prints the job's time and its unit's peak memory (cgroup
memory.peak: systemd 252 has no MemoryPeak).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from fondation_agent.queue.rules import FINISHED_STATUSES as FINISHED
from tests.integration.test_agent_claude_code import CLAUDE_REPO_FILES, COURSE_DOCS, INJECTED
from tests.operator_queue import Queue, summary
from tests.system.conftest import REPO_ROOT
from tests.system.guest import (
    CLAUDE_KEY,
    GATEWAY_UNIT,
    GUEST_LIB,
    JOB_ENV,
    GuestAgent,
    configure_gateway,
    exposure,
    wait_no_job_processes,
    wait_no_job_units,
)

pytestmark = [pytest.mark.system, pytest.mark.course_cli_disk, pytest.mark.timeout(1200)]
COURSE_CLI = "/opt/course-cli"
MODEL_ADDRESS = "10.77.1.1"  # on a dummy interface: never test_35's 10.77.0.x
MODEL_PORT = 8080
MODEL_LOG = "/run/fondation-test-fake-anthropic.log"
PEAK_FILE = "/run/fondation-test-job-memory-peak"
ENVIRON_FILE = "/run/fondation-test-job-environ"
NETWORK_FILE = "/run/fondation-test-job-network"
CLAUDE_REPO = "/srv/repos/claude"
JOB_SAMPLER = """#!/bin/sh
# job_sampler.sh CGROUP_DIR PEAK_OUT ENVIRON_OUT NETWORK_OUT: every 0.2 s until the cgroup is gone, writes
# "memory.peak highest-anon oom_kills" (bytes, bytes, count) to PEAK_OUT and appends the environment of
# each new program of the cgroup (pid and command line) to ENVIRON_OUT; once the job runs two programs
# (the relay and the CLI), its namespace's interfaces and sockets to NETWORK_OUT.
max=0
mkdir -p "$3.seen"
while stat=$(cat "$1/memory.stat" 2>/dev/null) && peak=$(cat "$1/memory.peak" 2>/dev/null) \\
        && kills=$(awk '$1 == "oom_kill" {print $2}' "$1/memory.events" 2>/dev/null); do
    anon=$(echo "$stat" | awk '$1 == "anon" {print $2}')
    [ "$anon" -gt "$max" ] && max=$anon
    echo "$peak $max $kills" > "$2.new" && mv "$2.new" "$2"
    pids=$(cat "$1/cgroup.procs" 2>/dev/null)
    for pid in $pids; do
        key="$pid-$(md5sum < /proc/$pid/cmdline 2>/dev/null | cut -c1-12)"
        [ -e "$3.seen/$key" ] && continue
        touch "$3.seen/$key"
        { echo "== $pid $(tr '\\0' ' ' < /proc/$pid/cmdline | head -c 200)"
          tr '\\0' '\\n' < /proc/$pid/environ; echo; } >> "$3" 2>/dev/null
    done
    if [ ! -s "$4" ] && [ "$(echo $pids | wc -w)" -ge 2 ]; then
        first=$(echo $pids | cut -d' ' -f1)
        { nsenter -t "$first" -n ip -o addr; nsenter -t "$first" -n ss -tan; } > "$4" 2>/dev/null
    fi
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
    # The model accepts the session's key, which only the gateway reads (JOB_ENV).
    vm.ssh(f"rm -f {MODEL_LOG}; systemd-run --quiet --unit=fondation-test-fake-anthropic python3 "
           f"{GUEST_LIB}/guest_fake_anthropic.py {MODEL_ADDRESS} {MODEL_PORT} {MODEL_LOG} {JOB_ENV}")
    vm.wait_for(f"cat {MODEL_LOG} 2>/dev/null", lambda out: "listening" in out, timeout=60)
    for path, content in CLAUDE_REPO_FILES.items():
        vm.put(f"{CLAUDE_REPO}/{path}", content)
    vm.ssh(f"set -e; cd {CLAUDE_REPO}; git init -q -b main; git add -A; "
           "git -c user.name=Test -c user.email=test@example.invalid commit -q -m initial; "
           f"chown -R fondation:fondation {CLAUDE_REPO}")
    configure_gateway(vm, upstream=f"http://{MODEL_ADDRESS}:{MODEL_PORT}")
    # The claude_* settings are read once, at start: a restart, not a reload.
    agent.write_config(cli_command=f"/usr/bin/node {COURSE_CLI}/cli.mjs analyze {{repo}} --engine claude",
                       claude_max_retries=0, job_timeout=900.0)
    agent.restart()
    yield agent
    agent.settings = saved
    agent.write_config()
    agent.restart()
    configure_gateway(vm)
    vm.ssh(f"systemctl stop fondation-test-fake-anthropic; ip link del fj-claude; umount {COURSE_CLI}; "
           f"rm -rf {CLAUDE_REPO}", check=False)


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
    vm.put(f"{GUEST_LIB}/job_sampler.sh", JOB_SAMPLER, mode="0755")
    vm.ssh(f"rm -rf {PEAK_FILE} {ENVIRON_FILE} {ENVIRON_FILE}.seen {NETWORK_FILE}; "
           f"systemd-run --quiet --unit=fondation-test-peak {GUEST_LIB}/job_sampler.sh /sys/fs/cgroup{cgroup} "
           f"{PEAK_FILE} {ENVIRON_FILE} {NETWORK_FILE}")
    scores = {"job": exposure(vm, unit), "gateway": exposure(vm, GATEWAY_UNIT)}
    job = queue.wait_finished(job_id, timeout=900)
    seconds = time.monotonic() - started
    wait_no_job_units(vm)
    peak, anon, oom_kills = (int(n) for n in vm.read(PEAK_FILE).split())
    requests = [json.loads(line) for line in vm.read(MODEL_LOG).splitlines()[1:]]
    print(f"\nreal Claude Code in the systemd-service sandbox, six steps: {seconds:.1f} s from enqueue to done; "
          f"job unit's memory.peak {peak / 2**20:.0f} MiB (MemoryMax={claude_host.settings['memory_max']}, page "
          f"cache included), highest anon {anon / 2**20:.0f} MiB, {oom_kills} OOM kills; "
          f"{len(requests)} Messages API requests; systemd-analyze security exposure: {scores}")
    assert oom_kills == 0
    assert job["status"] == "completed", f"{summary(job)}\n{claude_host.diagnostics()}"
    assert (job["currentStep"], job["totalSteps"]) == (6, 6)
    docs = {(d["kind"], d["slug"]): d for d in queue.docs(job_id)}
    assert sorted(docs) == COURSE_DOCS
    assert docs["chapter", "chapter_1_queue"]["title"] == "Reviewed chapter 1 queue", "the reviewed chapter wins"
    # Claude Code spoke only the Messages API; the model got the job.env key (the gateway's swap), and
    # Claude Code never saw CLAUDE.md as instructions.
    assert {(r["path"], r["key_ok"]) for r in requests} == {("/v1/messages?beta=true", True)}
    assert sum(1 for r in requests if "Write" in r["tools"]) >= 12, "a tool_use and a closing turn per step"
    assert not any(INJECTED in json.dumps(r["body"]) for r in requests)
    wait_no_job_processes(vm)
    # The job held nothing of the credential: not in any of its processes' environments (Claude Code
    # had the relay's URL and a token of the gateway's), not in its files, not on its network.
    environs = vm.read(ENVIRON_FILE)
    assert environs.count("\nANTHROPIC_BASE_URL=http://127.0.0.1:8790\n") >= 2, environs[-3000:]
    assert "\nANTHROPIC_API_KEY=fgw-" in environs, environs[-3000:]
    assert CLAUDE_KEY not in environs
    assert "CLAUDE_CODE_OAUTH_TOKEN" not in environs
    assert CLAUDE_KEY not in json.dumps(queue.docs(job_id)) and CLAUDE_KEY not in json.dumps(job)
    network = vm.read(NETWORK_FILE)
    interfaces = {line.split()[1] for line in network.splitlines() if line[:1].isdigit()}
    assert interfaces == {"lo"}, network  # a namespace of its own: the relay's loopback, nothing else
    assert CLAUDE_KEY in vm.read(JOB_ENV)  # where it is: the gateway's file
    # Its usage reached the job in Convex and the agent's metrics.
    usage = job.get("usage") or {}
    assert usage.get("requests") == len(requests) and usage.get("inputTokens", 0) > 0, job
    metrics = vm.ssh("curl -sS -m 10 http://127.0.0.1:9810/metrics").stdout
    counted = [line for line in metrics.splitlines() if line.startswith("fondation_agent_claude_")
               and "token" in line and not line.endswith(" 0.0")]
    assert counted, metrics


def test_the_real_claude_code_past_its_budget_fails_as_budget_exceeded(claude_host: GuestAgent, queue: Queue):
    """claude_max_tokens below one answer's tokens: the gateway forwards the first request, refuses the
    next (the model never sees it), and the job fails as budget_exceeded, not retried."""
    requests_before = len(claude_host.vm.read(MODEL_LOG).splitlines())
    claude_host.write_config(claude_max_tokens=50)  # read at start
    claude_host.restart()
    job_id = queue.enqueue("A course over budget", repository=f"file://{CLAUDE_REPO}", maxAttempts=3)
    job = queue.wait_finished(job_id, timeout=600)
    assert (job["status"], job.get("errorKind"), job["attempts"]) == ("failed", "budget_exceeded", 1), summary(job)
    assert "claude_max_tokens" in job["error"] and "not retried" in job["error"], job["error"]
    assert job["usage"]["requests"] >= 1 and job["usage"]["inputTokens"] + job["usage"]["outputTokens"] > 50, job
    requests = claude_host.vm.read(MODEL_LOG).splitlines()[requests_before:]
    assert len(requests) == job["usage"]["requests"], requests  # what the gateway refused never reached the model
    wait_no_job_units(claude_host.vm)
