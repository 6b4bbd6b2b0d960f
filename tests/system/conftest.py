"""Fixtures of the VM tier (`make system-test`): one Debian 12 guest with a real systemd per session.

- `vm`: the guest (vm/qemu.py), booted once from an overlay of the cached image, isolated (qemu's user
  net with restrict=on: its only way out is localconvex's port); powered off at the end. When a
  selected test is marked `course_cli_disk`, examples/course-cli (with the Claude Agent SDK's ~475 MB
  of node_modules, never copied over SSH) is attached as a read-only disk labelled `course-cli`.
- `localconvex`: a localconvex on the host's 127.0.0.1, which the guest reaches as 10.0.2.100 (guestfwd).
- `deb`: dist/fondation-agent_<version>_amd64.deb from `make deb`, which rebuilds it only when its
  sources changed ($FONDATION_AGENT_DEB names another).
- `agent`: the .deb installed in the guest with apt (offline: the image holds every Depends), the
  test CLIs, a git repository to clone, the token, a fake Claude key for the Claude gateway (started),
  and a config with `sandbox = "systemd-scope"` (the old name of systemd-service, which must keep
  working), and fondation-agent.service started.
- `queue`: enqueue jobs on the host and wait for them.

$FONDATION_SYSTEM_TEST_DROPIN names a file installed as a drop-in of fondation-agent.service before it
starts: a way to try unit changes (hardening, say) without rebuilding the package.

Every test here is marked `system`; `make test` leaves them out (pytest -m "not system").
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fondation_agent.queue.convex_api import ConvexHttp
from localconvex.launcher import LocalConvex
from tests.operator_queue import Queue
from tests.system.guest import (
    CLAUDE_KEY,
    GUEST_LIB,
    GUEST_REPO,
    JOB_ENV,
    REPO_URL,
    TOKEN_FILE,
    UNIT,
    GuestAgent,
    configure_gateway,
)
from vm.qemu import GUEST_FORWARD_ADDRESS, VirtualMachine, directory_disk

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOKEN = f"vm-worker-token-{secrets.token_hex(16)}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "course_cli_disk: the guest gets examples/course-cli as a read-only disk")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Booting a VM is never a side effect of a plain `pytest`: pyproject's addopts deselect the
    # `system` marker, which `make system-test` selects with `-m system`.
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.system)


def _log(message: str) -> None:
    print(f"[system-test] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def vm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       localconvex: LocalConvex) -> Iterator[VirtualMachine]:
    disks = []
    if any(item.get_closest_marker("course_cli_disk") for item in request.session.items):
        disks.append(directory_disk(REPO_ROOT / "examples" / "course-cli", "course-cli"))
    machine = VirtualMachine(workdir=tmp_path_factory.mktemp("vm"), isolated=True, guest_forwards=[localconvex.port],
                             read_only_disks=disks)
    machine.start()
    state = machine.wait_until_running()
    if state != "running":
        failed = machine.ssh("systemctl --failed --no-legend --plain", check=False).stdout
        pytest.fail(f"guest is {state!r} after boot; failed units:\n{failed}")
    yield machine
    _log(f"serial log kept at {machine.serial_log}")
    machine.shutdown()
    machine.overlay.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def localconvex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConvex]:
    # Binds 127.0.0.1:<free port>: qemu's guestfwd relays the guest's 10.0.2.100:<port> to exactly that.
    server = LocalConvex(
        state_file=tmp_path_factory.mktemp("localconvex") / "state.json",
        token=TOKEN,
        env={"FONDATION_ACCEPT_ANY_REPOSITORY_URL": "1"},
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def queue(localconvex: LocalConvex) -> Iterator[Queue]:
    client = ConvexHttp(localconvex.url, read_timeout=30, retries=2, admin_key=localconvex.admin_key)
    yield Queue(client, repository=REPO_URL, timeout=180, poll=0.5)
    client.close()


@pytest.fixture(scope="session")
def deb() -> Path:
    if os.environ.get("FONDATION_AGENT_DEB"):
        return Path(os.environ["FONDATION_AGENT_DEB"]).resolve()
    # make knows the package's sources: it rebuilds only when one changed, and prints the path.
    _log("make deb (builds the package if its sources changed)")
    done = subprocess.run(["make", "--no-print-directory", "deb", "print-deb"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"make deb failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    package = REPO_ROOT / done.stdout.strip().splitlines()[-1]
    if not package.is_file():
        pytest.fail(f"make deb made no {package}")
    return package


def agent_settings(localconvex: LocalConvex) -> dict:
    return {
        "convex_url": f"http://{GUEST_FORWARD_ADDRESS}:{localconvex.port}",
        "worker_id": "vm-agent",
        "sandbox": "systemd-scope",
        "allow_local_repositories": True,
        "cli_command": f"/usr/bin/python3 {GUEST_LIB}/guest_cli.py {{repo}} {{output}} {{prompt}}",
        # TCG is slow: generous leases, short polls.
        "poll_interval": 0.5,
        "lease_time": 30.0,
        "heartbeat_interval": 5.0,
        "job_timeout": 180.0,
        "drain_timeout": 180.0,
        "kill_grace": 3.0,
        "memory_max": "300M",
        "cpu_quota": "100%",  # one of the guest's two CPUs stays free for sshd and the agent
        "tasks_max": 32,
        # The guest's disk is 8 GiB: each job's own file system is small, and so is a clone.
        "disk_max": 384 * 1024**2,
        "clone_max_bytes": 64 * 1024**2,
        "metrics_address": "127.0.0.1:9810",
        "health_max_silence": 60.0,
        "log_format": "json",
    }


def _install(vm: VirtualMachine, deb: Path) -> None:
    vm.scp_to(deb, f"/root/{deb.name}")
    done = vm.ssh(
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /root/{deb.name}",
        check=False, timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(
            f"apt install of {deb.name} failed in the guest (which has no network: every Depends must be in the "
            f"image — add it to GUEST_PACKAGES in vm/build-image.sh):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def _install_test_files(vm: VirtualMachine) -> None:
    vm.ssh(f"install -d -m 0755 {GUEST_LIB}")
    vm.scp_to(REPO_ROOT / "tests" / "fixtures" / "fake_cli.py", f"{GUEST_LIB}/fake_cli.py")
    vm.scp_to(HERE / "guest_cli.py", f"{GUEST_LIB}/guest_cli.py")
    vm.scp_to(HERE / "guest_listener.py", f"{GUEST_LIB}/guest_listener.py")
    vm.ssh(f"chmod 0755 {GUEST_LIB}/*.py")
    # The repository the jobs clone (allow_local_repositories): a real git history, inside the guest.
    vm.ssh(
        f"set -e; rm -rf {GUEST_REPO}; install -d -m 0755 {GUEST_REPO}; cd {GUEST_REPO}; "
        "git init -q -b main; printf 'import util\\n' > app.py; printf 'X = 1\\n' > util.py; "
        "printf '# Demo\\n\\nA demo repository.\\n' > README.md; git add -A; "
        "git -c user.name=Test -c user.email=test@example.invalid commit -q -m initial; "
        # git refuses to read a repository of another user ("dubious ownership"): the agent clones as fondation.
        f"chown -R fondation:fondation {GUEST_REPO}"
    )


@pytest.fixture(scope="session")
def agent(vm: VirtualMachine, deb: Path, localconvex: LocalConvex) -> GuestAgent:
    _install(vm, deb)
    _install_test_files(vm)
    guest = GuestAgent(vm, agent_settings(localconvex))
    vm.put(TOKEN_FILE, TOKEN + "\n", mode="0640", owner="root:fondation")  # docs/operations.md
    # The Claude credential (a fake key) for the gateway alone; no job starts while the gateway is down.
    vm.put(JOB_ENV, f"ANTHROPIC_API_KEY={CLAUDE_KEY}\n", mode="0640", owner="root:fondation-gateway")
    configure_gateway(vm)
    guest.write_config()
    # A trial drop-in for the unit (e.g. hardening changes), without rebuilding the package.
    if os.environ.get("FONDATION_SYSTEM_TEST_DROPIN"):
        trial = Path(os.environ["FONDATION_SYSTEM_TEST_DROPIN"])
        _log(f"trying the unit with {trial} as a drop-in")
        vm.put(f"/etc/systemd/system/{UNIT}.d/90-system-test-trial.conf", trial.read_text())
        vm.ssh("systemctl daemon-reload")
    done = vm.ssh(f"systemctl enable {UNIT} && systemctl restart {UNIT}", check=False, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"{UNIT} did not start: {done.stderr.strip()}\n{guest.diagnostics()}")
    guest.wait_active()
    # The one worker unit under its plain name: the empty instance, which reads CONFIG (agent.toml).
    assert "argv[]=/usr/bin/fondation-agent run --instance= ;" in vm.ssh(f"systemctl show {UNIT} -p ExecStart").stdout
    return guest


@pytest.fixture(scope="session")
def worker_token() -> str:
    return TOKEN


@pytest.fixture
def journal_cursor(agent: GuestAgent) -> str:
    """The journal's position before the test: agent.journal(after=...) shows only the test's lines."""
    return agent.cursor()
