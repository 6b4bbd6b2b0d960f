"""Two concurrent jobs, one hostile: every escape a job could try is refused, and nothing of it is left.

The guest gets a dummy interface carrying 169.254.169.254 (the cloud metadata address, here also the
resolver, as on some clouds), a 10.x address, and 198.51.100.7 and 2001:db8::7 standing for the
Internet, with a listener behind each, before any job runs: a job's network is judged by what those
listeners receive, and no test packet leaves the VM (which qemu boots with restrict=on anyway). While
both jobs run, `systemctl restart nftables` flushes every table of the host: a job's network is a
namespace of its own, which no ruleset decides. The table of docs/operations.md, "What a job can and
cannot do", is this file's assertions, line by line.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.operator_queue import Queue
from tests.system.guest import (
    CLAUDE_KEY,
    GATEWAY_UNIT,
    GUEST_LIB,
    POOL_USERS,
    GuestAgent,
    exposure,
    job_units,
    wait_no_job_processes,
    wait_no_job_units,
)

pytestmark = pytest.mark.system
LISTENER_LOG = "/run/fondation-test-listener.log"
LISTENS = ("169.254.169.254:80/tcp", "169.254.169.254:53/udp", "169.254.169.254:123/udp", "10.77.0.1:80/tcp",
           "198.51.100.7:80/tcp", "2001:db8::7:80/tcp")
WORKSPACES = "/var/lib/fondation-agent/workspaces"
INBOUND_PORT = 7777  # guest_cli.py's: the hostile job listens there
PROMPT_MARK = f"prompt-{secrets.token_hex(8)}"
MAX_JOB_EXPOSURE = 3.0
MAX_AGENT_EXPOSURE = 4.5


def sections(report: str) -> dict[str, str]:
    """'## label\\nDENIED …' / 'GOT n characters:\\n…' blocks of a hostile report, by label."""
    found = {}
    for block in report.split("## ")[1:]:
        label, _, body = block.partition("\n")
        found[label.strip()] = body.strip()
    return found


@pytest.fixture(scope="module")
def hostile_host(agent: GuestAgent) -> Iterator[GuestAgent]:
    vm = agent.vm
    vm.ssh("ip link add fj-test type dummy; ip link set fj-test up; "
           "for a in 169.254.169.254 10.77.0.1 198.51.100.7; do ip addr add $a/32 dev fj-test; done; "
           "ip -6 addr add 2001:db8::7/128 dev fj-test nodad")
    vm.ssh(f"rm -f {LISTENER_LOG}; systemd-run --quiet --unit=fondation-test-listener "
           f"python3 {GUEST_LIB}/guest_listener.py {LISTENER_LOG} {' '.join(LISTENS)}")
    vm.wait_for(f"cat {LISTENER_LOG} 2>/dev/null", lambda out: "listening" in out, timeout=60)
    vm.ssh("cp /etc/resolv.conf /root/resolv.conf.saved && echo 'nameserver 169.254.169.254' > /etc/resolv.conf")
    agent.reload(concurrency=2)
    yield agent
    agent.reload(concurrency=1)
    vm.ssh("cp /root/resolv.conf.saved /etc/resolv.conf; systemctl stop fondation-test-listener nftables; "
           "ip link del fj-test", check=False)


@pytest.fixture(scope="module")
def hostile_run(hostile_host: GuestAgent, queue: Queue) -> dict:
    """The hostile job and its victim, concurrently; their reports; the unit scores seen meanwhile."""
    agent = hostile_host
    vm = agent.vm
    # Running means the CLI's first progress line arrived ("analyzing" alone is set before its unit starts).
    hostile_id = queue.enqueue("hostile", maxAttempts=1)
    queue.wait_for(hostile_id, running, timeout=180)
    victim_id = queue.enqueue(f"await:{PROMPT_MARK}", maxAttempts=1)
    queue.wait_for(victim_id, running, timeout=180)
    victim_unit = f"fondation-job-{victim_id}-1.service"
    # What any local user can read of a job's unit (systemctl show: its properties; its unit file).
    unit_view = vm.ssh(f"systemctl show {victim_unit}; cat /run/systemd/transient/{victim_unit}").stdout
    scores = {"job": exposure(vm, f"fondation-job-{hostile_id}-1.service"),
              "agent": exposure(vm, "fondation-agent.service")}
    units = job_units(vm)
    # Inbound: the hostile job listens on INBOUND_PORT of its namespace; from the host, nothing is there.
    inbound = {address: vm.ssh(f"python3 -c \"import socket; socket.create_connection(('{address}', {INBOUND_PORT}), "
                               f"timeout=10)\"", check=False).returncode for address in ("127.0.0.1", "10.0.2.15")}
    # A reload of the firewall flushes every table of the host: nothing of a job's isolation is in one.
    vm.ssh("systemctl restart nftables && nft list ruleset | head -3")
    gateway_pid = vm.ssh(f"systemctl show -p MainPID --value {GATEWAY_UNIT}").stdout.strip()
    # Say the victim's gateway token leaked anyway (root reads it from the victim's CLI): it must be worthless.
    victim_token = vm.ssh(f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value {victim_unit})/environ "
                          "| sed -n 's/^ANTHROPIC_API_KEY=//p'").stdout.strip()
    assert victim_token.startswith("fgw-"), victim_token
    vm.put(f"{WORKSPACES}/{hostile_id}-1/repo/GO", f"{victim_id} {gateway_pid} {victim_token}\n")  # its tries start
    hostile = queue.wait_completed(hostile_id, timeout=300)
    vm.put(f"{WORKSPACES}/{victim_id}-1/repo/GO", "\n")  # and only then does the victim finish
    victim = queue.wait_completed(victim_id, timeout=300)
    report = "\n".join(doc["content"] for doc in queue.docs(hostile_id))
    return {"hostile": hostile, "victim": victim, "report": sections(report), "raw": report, "scores": scores,
            "units": units, "victim_docs": queue.docs(victim_id), "unit_view": unit_view, "inbound": inbound,
            "gateway_pid": gateway_pid, "victim_token": victim_token}


def running(job: dict) -> bool:
    return job["status"] == "analyzing" and bool(job.get("currentStep"))


def denied(run: dict, label: str) -> None:
    body = run["report"].get(label, "")
    assert body.startswith("DENIED"), f"{label}: {body[:600]}"


def got(run: dict, label: str) -> str:
    body = run["report"].get(label, "")
    assert body.startswith("GOT"), f"{label}: {body[:600]}"
    return body


def test_hostile_jobs_run_as_different_job_users_in_units_of_their_own(hostile_run: dict) -> None:
    units = hostile_run["units"]
    assert f"fondation-job-{hostile_run['hostile']['_id']}-1.service" in units, units
    assert f"fondation-job-{hostile_run['victim']['_id']}-1.service" in units, units
    assert "uid=" in got(hostile_run, "whoami")
    assert re.search(r"NoNewPrivs:\s+1", got(hostile_run, "no new privileges"))


def test_hostile_unit_scores(hostile_run: dict) -> None:
    scores = hostile_run["scores"]
    assert scores["job"] <= MAX_JOB_EXPOSURE, scores
    assert scores["agent"] <= MAX_AGENT_EXPOSURE, scores


def test_hostile_job_cannot_see_read_write_or_signal_the_other(hostile_run: dict) -> None:
    hostile_id = hostile_run["hostile"]["_id"]
    listing = got(hostile_run, "list workspaces")
    assert listing.splitlines()[-1].strip() == f"{hostile_id}-1", listing  # its own, nothing else
    for label in ("read victim repo", "plant victim output", "victim owner marker", "own owner marker",
                  "stop victim unit"):
        denied(hostile_run, label)
    assert got(hostile_run, "signal others").splitlines()[-1] == "signalable: []"
    docs = hostile_run["victim_docs"]
    assert any("victim course" in doc["content"] for doc in docs), docs
    assert not any("planted" in doc["content"] or doc["slug"] == "planted" for doc in docs), docs


def test_hostile_job_reaches_no_systemd_manager_and_cannot_lift_its_limits(hostile_run: dict) -> None:
    for label in ("systemctl user", "systemd-run user", "systemd-run system", "set-property", "cgroup limits"):
        denied(hostile_run, label)


def test_hostile_job_sees_no_other_job_and_reaches_no_journal_or_io_uring(hostile_run: dict) -> None:
    for label in ("read job units", "list job cgroups", "journal socket", "io_uring"):
        denied(hostile_run, label)


def test_no_prompt_or_environment_of_a_job_is_in_its_units_properties(hostile_run: dict) -> None:
    view = hostile_run["unit_view"]
    assert "ExecStart=" in view and "job_exec" in view, view
    assert PROMPT_MARK not in view and "CLAUDE_OUTPUT_DIR" not in view, view


def test_hostile_job_schedules_nothing_and_gains_no_privilege(hostile_run: dict) -> None:
    for label in ("crontab", "at", "sudo", "su"):
        denied(hostile_run, label)


def test_hostile_job_writes_nowhere_but_its_workspace(hostile_run: dict) -> None:
    for label in ("write /etc", "write /opt", "write state dir", "write cron spool"):
        denied(hostile_run, label)


def test_hostile_job_finds_nothing_of_the_claude_credential(hostile_host: GuestAgent, hostile_run: dict) -> None:
    assert hostile_host.vm.ssh(f"grep -c {CLAUDE_KEY} /etc/fondation-agent/job.env").stdout.strip() == "1"
    for label in ("read credentials file", "read gateway settings", "gateway environ", "gateway memory"):
        denied(hostile_run, label)
    # It saw its own processes' environments (the CLI's, the relay's) and searched every file it can read.
    environments = got(hostile_run, "environments")
    assert "ANTHROPIC_BASE_URL=" in environments and "FONDATION_JOB_ID=" in environments, environments
    assert hostile_run["gateway_pid"] not in got(hostile_run, "processes").split()
    got(hostile_run, "search files")
    assert CLAUDE_KEY not in hostile_run["raw"]


def test_hostile_job_reaches_nothing_but_the_gateway_whatever_nftables_does(
        hostile_host: GuestAgent, hostile_run: dict) -> None:
    for label in ("agent port", "loopback sshd", "ipv6 loopback sshd", "host address sshd", "internet http",
                  "ipv6 internet http", "metadata http", "private address", "dns to the resolver", "dns lookup",
                  "metadata udp", "icmp", "abstract socket of another job", "gateway control socket"):
        denied(hostile_run, label)
    arrived = hostile_host.vm.read(LISTENER_LOG)
    assert arrived.strip() == "listening", arrived  # not a packet of the job's reached any of them
    # Nothing reaches into the job either: its listener is in its own namespace.
    assert hostile_run["inbound"] == {"127.0.0.1": 1, "10.0.2.15": 1}, hostile_run["inbound"]
    # The gateway itself is there (the relay works), and refuses what is not a live attempt's Messages call.
    assert "HTTP 401" in hostile_run["report"]["forged token at the gateway"]
    denied(hostile_run, "forged token at the gateway")
    # Another job's token (claimed by the victim's user before its CLI started): refused, for requests and claims.
    for label in ("another job's token at the gateway", "claim another job's token"):
        denied(hostile_run, label)
        assert "HTTP 403" in hostile_run["report"][label] and "token is another job" in hostile_run["report"][label]
    denied(hostile_run, "own token beyond the messages api")
    assert "HTTP 4" in hostile_run["report"]["own token beyond the messages api"]
    # The agent itself is unharmed by the tries on its port.
    assert hostile_host.vm.ssh("curl -sS -m 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:9810/health"
                               ).stdout.strip() == "200"


def test_hostile_job_leaves_nothing_for_the_next_job_or_the_host(hostile_host: GuestAgent, hostile_run: dict,
                                                                 queue: Queue) -> None:
    vm = hostile_host.vm
    for label in ("leave files", "poison home", "daemon"):
        got(hostile_run, label)  # it could, inside its own namespace: what counts is what remains
    wait_no_job_units(vm)
    wait_no_job_processes(vm)
    hostile_uid = re.search(r"uid=(\d+)", got(hostile_run, "whoami")).group(1)
    # The next job alone gets the lowest free job user: the hostile one's.
    inspect_id = queue.enqueue("inspect", maxAttempts=1)
    queue.wait_completed(inspect_id)
    inspected = sections("\n".join(doc["content"] for doc in queue.docs(inspect_id)))
    assert inspected["whoami"] == f"uid={hostile_uid}", inspected
    assert inspected["found"] == "nothing", inspected
    wait_no_job_units(vm)
    wait_no_job_processes(vm)
    uids = vm.ssh("getent passwd | awk -F: '$1 ~ /^fondation-job-[0-9]+$/ {print $3}'").stdout.split()
    owned = " -o ".join(f"-uid {uid}" for uid in uids)
    assert vm.ssh(f"find / /dev/shm /tmp /var/tmp -xdev \\( {owned} \\) -print 2>/dev/null", check=False
                  ).stdout.strip() == ""
    assert vm.ssh("find /dev/shm /tmp /var/tmp -name 'hostile-mark*' 2>/dev/null", check=False).stdout.strip() == ""
    assert vm.ssh("ls -A /var/spool/cron/crontabs 2>/dev/null", check=False).stdout.strip() == ""
    assert vm.ssh("atq", check=False).stdout.strip() == ""
    managers = vm.ssh("systemctl list-units --plain --no-legend 'user@*.service'", check=False).stdout
    assert not any(f"user@{uid}.service" in managers for uid in uids), managers
    assert vm.ssh(f"pgrep -a -u {POOL_USERS} || true").stdout.strip() == ""
