"""The systemd scope runner, through real subprocesses and stand-ins for sudo, systemd-run and systemctl.

The stand-ins (written into a temporary bin/ put first on PATH) record every command line and emulate
what the runner relies on: sudo resets the environment and runs the helper; `systemd-run --scope`
makes the command a "scope" (here: a new session, so a process group stands for the cgroup), arms
RuntimeMaxSec (a watcher that stops the group with Result=timeout) and execs the command;
`systemctl --user` shows LoadState/ActiveState/Result, stops a scope (SIGTERM, SIGKILL after
TimeoutStopSec), resets failed ones and lists them. A test CLI can mark its own scope `oom-kill`, as the
kernel and systemd would. The real thing is tested in a Debian 12 VM (tests/system/).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fondation_agent import scope
from fondation_agent.config import ConfigError
from fondation_agent.sandbox import Limits
from fondation_agent.scope import (
    HelperError,
    SystemdScopeRunner,
    hand_back,
    read_credentials_file,
    scope_oom_kills,
    split_oom_marker,
    unit_description,
)
from fondation_agent.workspace import OWNER_FILE, Workspace

JOB_USER = "nobody"  # any user but the one running the tests (the stand-in sudo does not switch)
HELPER = [sys.executable, "-I", "-m", "fondation_agent.scope"]

COMMON = '''
import json, os, signal, sys, time
from pathlib import Path
BASE = Path(__file__).resolve().parent.parent
STATE = BASE / "state"
LOG = BASE / "calls.jsonl"

def record(tool, argv):
    with open(LOG, "a") as log:
        log.write(json.dumps({"tool": tool, "argv": argv}) + "\\n")

def members(pgid):
    """Live (non-zombie) processes of a process group: our stand-in for a scope's cgroup."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found

def load(unit):
    try:
        return json.loads((STATE / (unit + ".json")).read_text())
    except FileNotFoundError:
        return None

def save(state):
    path = STATE / (state["unit"] + ".json")
    path.with_suffix(".tmp").write_text(json.dumps(state))
    path.with_suffix(".tmp").replace(path)

def seconds(prop):
    value = prop.rstrip("ms") if prop.endswith("ms") else prop
    return float(value) / (1000 if prop.endswith("ms") else 1)

def stop(state, sig_result="timeout"):
    pgid = state["pgid"]
    if not members(pgid):
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds(state["props"]["TimeoutStopSec"])
    while members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if members(pgid):
        fresh = load(state["unit"]) or state
        if fresh["result"] == "success":
            fresh["result"] = sig_result  # systemd: a stop that needs SIGKILL ends as Result=timeout
            save(fresh)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while members(pgid):
        time.sleep(0.02)
'''

FAKE_SUDO = COMMON + '''
args = sys.argv[1:]
record("sudo", args)
if args[:2] != ["-n", "-u"] or args[3] != "--":
    print("sudo: usage", file=sys.stderr)
    sys.exit(1)
# Like sudo's env_reset: the agent's environment never reaches the command.
env = {"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": str(BASE / "run"), "SUDO_USER": "agent",
       "HOME": "/nonexistent", "MAIL": "/var/mail/x", "SHELL": "/bin/sh"}
os.execvpe(args[4], args[4:], env)
'''

FAKE_SYSTEMD_RUN = COMMON + '''
args = sys.argv[1:]
record("systemd-run", args)
split = args.index("--")
options, command = args[:split], args[split + 1:]
assert "--user" in options and "--scope" in options, options
unit = next(o.split("=", 1)[1] for o in options if o.startswith("--unit=")) + ".scope"
description = next(o.split("=", 1)[1] for o in options if o.startswith("--description="))
props = dict(options[i + 1].split("=", 1) for i, o in enumerate(options) if o == "-p")
if load(unit) is not None:
    print(f"Failed to start transient scope unit: Unit {unit} was already loaded", file=sys.stderr)
    sys.exit(1)
if os.getpgid(0) != os.getpid():  # (the agent starts sudo in a session of its own already)
    os.setsid()
state = {"unit": unit, "description": description, "props": props, "pgid": os.getpid(), "result": "success"}
save(state)
if os.fork() == 0:  # the RuntimeMaxSec watcher, detached from the scope and from every pipe
    os.setsid()
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 4096)
        deadline = time.monotonic() + seconds(props["RuntimeMaxSec"])
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if not members(state["pgid"]):
                os._exit(0)
        fresh = load(unit)
        if fresh is not None:
            if fresh["result"] == "success":
                fresh["result"] = "timeout"
                save(fresh)
            stop(fresh)
        os._exit(0)
    os._exit(0)
os.wait()
os.execvpe(command[0], command, os.environ)
'''

FAKE_SYSTEMCTL = COMMON + '''
args = sys.argv[1:]
record("systemctl", args)
assert args[0] == "--user", args
args = [a for a in args[1:] if a != "--no-pager"]
verb, rest = args[0], args[1:]

def active_state(state):
    if state is None:
        return "inactive"
    if members(state["pgid"]):
        return "active"
    return "failed" if state["result"] != "success" else "inactive"

if verb == "show":
    names = [rest[i + 1] for i, a in enumerate(rest) if a == "-p"]
    unit = rest[-1]
    state = load(unit)
    if state is not None and active_state(state) == "inactive":
        (STATE / (unit + ".json")).unlink()  # garbage-collected, as systemd does with a clean scope
        state = None
    values = {"LoadState": "loaded" if state else "not-found", "ActiveState": active_state(state),
              "Result": state["result"] if state else "success"}
    for name in names:
        print(f"{name}={values[name]}")
elif verb == "stop":
    status = 0
    for unit in rest:
        state = load(unit)
        if state is None:
            print(f"Failed to stop {unit}: Unit {unit} not loaded.", file=sys.stderr)
            status = 5
            continue
        stop(state)
    sys.exit(status)
elif verb == "reset-failed":
    for unit in rest:
        state = load(unit)
        if state is not None and not members(state["pgid"]):
            (STATE / (unit + ".json")).unlink()
elif verb == "list-units":
    for path in sorted(STATE.glob("fondation-job-*.json")):
        state = json.loads(path.read_text())
        active = active_state(state)
        sub = {"active": "running", "failed": "failed", "inactive": "dead"}[active]
        print(f"{state['unit']} loaded {active} {sub} {state['description']}")
else:
    print(f"unknown verb {verb}", file=sys.stderr)
    sys.exit(1)
'''

TEST_CLI = '''
import json, os, signal, subprocess, sys, time
from pathlib import Path
mode, dump = sys.argv[1], Path(sys.argv[2])
dump.write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "umask": os.umask(0o007),
                            "stdin": os.isatty(0) or sys.stdin.read(), "pgid": os.getpgid(0),
                            "oom_score_adj": open("/proc/self/oom_score_adj").read().strip()}))
print("[PROGRESS] Step 1/2: starting", flush=True)
if mode == "ok":
    output = Path(os.environ["CLAUDE_OUTPUT_DIR"])
    (output / "locked").mkdir(mode=0o700)
    (output / "locked" / "01_chapter.md").write_text("# Chapter\\n")
    os.chmod(output / "locked" / "01_chapter.md", 0o600)
    print("[PROGRESS] Step 2/2: done", flush=True)
    print("all good", file=sys.stderr)
    sys.exit(0)
if mode == "fail":
    print("the CLI broke down", file=sys.stderr)
    sys.exit(3)
if mode == "abort":
    os.kill(os.getpid(), signal.SIGABRT)
if mode == "oom":  # what the kernel and systemd do when the scope hits MemoryMax
    state_dir = Path(sys.argv[3])
    for path in state_dir.glob("*.json"):
        state = json.loads(path.read_text())
        if state["pgid"] == os.getpgid(0):
            state["result"] = "oom-kill"
            path.write_text(json.dumps(state))
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "marker":  # the keeper's report alone (memory.events said oom_kill > 0)
    print("fondation-agent-scope: oom_kill=2 (the scope hit MemoryMax)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if mode in ("hang", "stubborn"):
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    Path(sys.argv[3]).write_text(str(child.pid))
    print("[PROGRESS] Step 2/2: hanging", flush=True)
    time.sleep(600)
if mode == "orphan":  # exits at once, leaving a child in the scope that holds stdout and stderr open
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(sys.argv[3]).write_text(str(child.pid))
    sys.exit(0)
'''


@dataclass
class FakeConfig:
    temp_dir: str
    job_user: str = JOB_USER
    worker_id: str = "worker one"


class FakeHost:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.log = root / "calls.jsonl"
        self.temp_dir = root / "workspaces"
        for directory in (self.bin, self.state, root / "run" / "systemd"):
            directory.mkdir(parents=True)
        (root / "run" / "systemd" / "private").touch()  # "the user manager is up"
        for name, body in (("sudo", FAKE_SUDO), ("systemd-run", FAKE_SYSTEMD_RUN), ("systemctl", FAKE_SYSTEMCTL)):
            path = self.bin / name
            path.write_text(f"#!{sys.executable}\n{body}")
            path.chmod(0o755)
        self.cli = root / "cli.py"
        self.cli.write_text(TEST_CLI)

    def calls(self, tool: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [entry["argv"] for entry in entries if tool is None or entry["tool"] == tool]

    def units(self) -> dict[str, dict]:
        return {path.stem: json.loads(path.read_text()) for path in self.state.glob("*.json")}

    def workspace(self, job_id: str = "jobA", attempt: int = 1, worker: str = "worker one") -> Workspace:
        workspace = Workspace(self.temp_dir, job_id, attempt).create(worker)
        workspace.repo.mkdir()
        return workspace


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    umask = os.umask(0o022)
    os.umask(umask)
    yield FakeHost(tmp_path)
    os.umask(umask)  # the runner sets the agent's umask to 0007


def make_runner(host: FakeHost, worker_id: str = "worker one") -> SystemdScopeRunner:
    return SystemdScopeRunner(FakeConfig(temp_dir=str(host.temp_dir), worker_id=worker_id), helper=HELPER)


LIMITS = Limits(timeout=30, kill_grace=1, memory_max="256M", cpu_quota="50%", tasks_max=64)
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "CLAUDE_OUTPUT_DIR": "",
       "FONDATION_JOB_ID": "jobA", "NOT_A_SECRET": "value with spaces; $(and) \"quotes\""}


def run_cli(host: FakeHost, runner: SystemdScopeRunner, mode: str, *, limits: Limits = LIMITS,
            extra: list[str] | None = None, workspace: Workspace | None = None, unit: str = "fondation-job-jobA-1"):
    workspace = workspace or host.workspace()
    env = {**ENV, "CLAUDE_OUTPUT_DIR": str(workspace.output)}
    dump = host.root / "cli-dump.json"
    argv = [sys.executable, str(host.cli), mode, str(dump), *(extra or [])]
    cli = runner.start(argv, env=env, cwd=workspace.repo, unit=unit, limits=limits)
    return cli, workspace, env, dump, argv


# ---- a job that succeeds --------------------------------------------------------------------------


def test_success_command_lines_environment_and_hand_back(host: FakeHost):
    runner = make_runner(host)
    assert os.umask(0o007) == 0o007  # the agent's files are group-writable from now on
    assert stat.S_IMODE(host.temp_dir.stat().st_mode) == 0o2750
    assert host.temp_dir.stat().st_gid == pwd.getpwnam(JOB_USER).pw_gid
    cli, workspace, env, dump, argv = run_cli(host, runner, "ok")
    lines = list(cli.stdout_lines())
    outcome = cli.wait()

    assert lines == ["[PROGRESS] Step 1/2: starting", "[PROGRESS] Step 2/2: done"]
    assert (outcome.result, outcome.exit_code, outcome.stderr_tail) == ("success", 0, "all good")
    # Workspaces of a shared temp_dir are setgid and group-writable.
    assert stat.S_IMODE(workspace.root.stat().st_mode) == 0o2770
    assert stat.S_IMODE(workspace.output.stat().st_mode) == 0o2770

    unit = "fondation-job-jobA-1"
    description = "fondation-agent fondation-job-jobA-1 for worker worker_one"
    assert unit_description(unit, "worker one") == description
    run_call = next(call for call in host.calls("sudo") if "run" in call)
    assert run_call == [
        "-n", "-u", JOB_USER, "--", *HELPER, "run", "--unit", unit, "--description", description,
        "--memory-max", "256M", "--cpu-quota", "50%", "--tasks-max", "64",
        "--runtime-max-ms", "30000", "--stop-timeout-ms", "1000", "--", *argv,
    ]
    assert host.calls("systemd-run") == [[
        "--user", "--scope", "--quiet", f"--unit={unit}", f"--description={description}",
        "-p", "MemoryMax=256M", "-p", "MemorySwapMax=0", "-p", "CPUQuota=50%", "-p", "TasksMax=64",
        "-p", "RuntimeMaxSec=30000ms", "-p", "TimeoutStopSec=1000ms",
        "--", sys.executable, "-I", "-m", "fondation_agent.scope", "keep", "--", *argv,
    ]]
    finish_call = next(call for call in host.calls("sudo") if "finish" in call)
    assert finish_call == ["-n", "-u", JOB_USER, "--", *HELPER, "finish", "--unit", unit,
                           "--workspace", str(workspace.root)]
    assert ["--user", "--no-pager", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "Result",
            f"{unit}.scope"] in host.calls("systemctl")

    # The CLI got exactly the allowlisted environment, with the job user's identity, and nothing else:
    # not sudo's variables, not XDG_RUNTIME_DIR, not the helper's own.
    account = pwd.getpwuid(os.getuid())
    seen = json.loads(dump.read_text())
    assert seen["env"] == {**env, "HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name}
    assert seen["cwd"] == str(workspace.repo)
    assert seen["umask"] == 0o007
    assert seen["stdin"] == ""  # /dev/null
    assert int(seen["oom_score_adj"]) >= scope.CLI_OOM_SCORE_ADJ
    # No value of the environment was ever on a command line.
    for call in host.calls():
        for value in (ENV["NOT_A_SECRET"], str(workspace.output)):
            assert all(value not in argument for argument in call)

    # Hand-back: what the CLI locked up is group-readable and -writable, so the agent can read and delete it.
    locked = workspace.output / "locked"
    assert stat.S_IMODE(locked.stat().st_mode) & 0o770 == 0o770
    assert stat.S_IMODE((locked / "01_chapter.md").stat().st_mode) == 0o660
    assert host.units() == {}  # the scope is gone


def test_exit_status_and_signal(host: FakeHost):
    runner = make_runner(host)
    cli, *_ = run_cli(host, runner, "fail")
    assert list(cli.stdout_lines()) == ["[PROGRESS] Step 1/2: starting"]
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code, outcome.stderr_tail) == ("exit-code", 3, "the CLI broke down")

    cli, *_ = run_cli(host, runner, "abort", workspace=host.workspace("jobB"), unit="fondation-job-jobB-1")
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code) == ("signal", -6)  # the keeper ends the way the CLI did


# ---- limits ---------------------------------------------------------------------------------------


def test_oom_kill_result_is_read_and_the_failed_unit_reset(host: FakeHost):
    runner = make_runner(host)
    cli, *_ = run_cli(host, runner, "oom", extra=[str(host.state)])
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code) == ("oom-kill", -9)
    assert ["--user", "--no-pager", "reset-failed", "fondation-job-jobA-1.scope"] in host.calls("systemctl")
    assert host.units() == {}
    assert "MemoryMax=256M" in outcome.describe(LIMITS)


def test_oom_seen_by_the_keeper_counts_too(host: FakeHost):
    runner = make_runner(host)
    cli, *_ = run_cli(host, runner, "marker")
    outcome = cli.wait()
    assert outcome.result == "oom-kill"
    assert "oom_kill=" not in outcome.stderr_tail  # the marker is ours, not the CLI's message


def test_runtime_max_ends_as_timeout(host: FakeHost, tmp_path: Path):
    runner = make_runner(host)
    limits = Limits(timeout=1.5, kill_grace=0.5, memory_max="1G", cpu_quota="100%", tasks_max=64)
    started = time.monotonic()
    cli, *_ = run_cli(host, runner, "stubborn", limits=limits, extra=[str(tmp_path / "child.pid")])
    outcome = cli.wait()
    assert outcome.result == "timeout"
    assert 1.5 <= time.monotonic() - started < 15
    child = int((tmp_path / "child.pid").read_text())
    assert not _alive(child)  # SIGTERM-proof children die with the scope
    assert host.units() == {}


# ---- stopping -------------------------------------------------------------------------------------


def test_stop_kills_the_whole_tree_and_is_idempotent(host: FakeHost, tmp_path: Path):
    runner = make_runner(host)
    cli, *_ = run_cli(host, runner, "hang", extra=[str(tmp_path / "child.pid")])
    lines = cli.stdout_lines()
    assert next(lines) == "[PROGRESS] Step 1/2: starting"
    assert next(lines) == "[PROGRESS] Step 2/2: hanging"
    started = time.monotonic()
    cli.stop()
    cli.stop()
    assert time.monotonic() - started < 0.5  # stop() does not block
    outcome = cli.wait()
    assert outcome.result == "stopped"
    assert not _alive(int((tmp_path / "child.pid").read_text()))
    assert ["-n", "-u", JOB_USER, "--", *HELPER, "stop", "--unit", "fondation-job-jobA-1"] in host.calls("sudo")
    assert host.units() == {}


def test_children_left_behind_are_stopped_with_the_scope(host: FakeHost, tmp_path: Path):
    runner = make_runner(host)
    cli, *_ = run_cli(host, runner, "orphan", extra=[str(tmp_path / "child.pid")])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(cli.stdout_lines()))  # as job.py relays them
    reader.start()
    started = time.monotonic()
    outcome = cli.wait()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert time.monotonic() - started < 10
    assert outcome.result == "success"
    assert lines == ["[PROGRESS] Step 1/2: starting"]
    assert not _alive(int((tmp_path / "child.pid").read_text()))


# ---- leftovers of an earlier run ------------------------------------------------------------------


def test_cleanup_leftovers_stops_only_this_workers_scopes(host: FakeHost, tmp_path: Path):
    # An earlier run of "worker one" left a running scope, and a failed one; "worker two" has one running.
    earlier = make_runner(host)
    mine, *_ = run_cli(host, earlier, "hang", extra=[str(tmp_path / "1.pid")], unit="fondation-job-old-1",
                       workspace=host.workspace("old"))
    theirs_runner = make_runner(host, worker_id="worker two")
    theirs, *_ = run_cli(host, theirs_runner, "hang", extra=[str(tmp_path / "2.pid")],
                         unit="fondation-job-other-1", workspace=host.workspace("other", worker="worker two"))
    for cli in (mine, theirs):
        next(cli.stdout_lines())
    failed = {"unit": "fondation-job-gone-2.scope", "pgid": 2**22 + 1, "result": "oom-kill", "props": {},
              "description": unit_description("fondation-job-gone-2", "worker one")}
    (host.state / "fondation-job-gone-2.scope.json").write_text(json.dumps(failed))
    # A workspace left behind with a file the agent cannot delete until the job user hands it back.
    left = host.workspace("old", attempt=2)
    (left.output / "private").mkdir(mode=0o500)

    restarted = make_runner(host)  # the agent starts again
    stopped = restarted.cleanup_leftovers()
    assert sorted(stopped) == ["fondation-job-gone-2.scope", "fondation-job-old-1.scope"]
    assert sorted(host.units()) == ["fondation-job-other-1.scope"]
    assert not _alive(int((tmp_path / "1.pid").read_text()))
    assert _alive(int((tmp_path / "2.pid").read_text()))
    leftovers = [call for call in host.calls("sudo") if "leftovers" in call]
    assert leftovers[-1] == ["-n", "-u", JOB_USER, "--", *HELPER, "leftovers", "--worker", "worker_one",
                             "--temp-dir", str(host.temp_dir), "--wait", "30"]
    assert not left.root.exists()
    assert restarted.cleanup_leftovers() == []
    assert mine.wait().result in ("signal", "stopped")
    theirs.stop()
    assert theirs.wait().result == "stopped"


def test_user_manager_missing_is_a_clear_startup_error(host: FakeHost):
    (host.root / "run" / "systemd" / "private").unlink()
    (host.root / "run" / "systemd").rmdir()
    original = scope.MANAGER_WAIT_STARTUP_S
    scope.MANAGER_WAIT_STARTUP_S = 0.3
    try:
        with pytest.raises(RuntimeError, match="loginctl enable-linger"):
            make_runner(host)
    finally:
        scope.MANAGER_WAIT_STARTUP_S = original


def test_sudo_refusal_is_a_config_error(host: FakeHost):
    (host.bin / "sudo").write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
    with pytest.raises(ConfigError, match="a password is required"):
        make_runner(host)


def test_agent_and_job_user_must_differ(host: FakeHost):
    config = FakeConfig(temp_dir=str(host.temp_dir), job_user=pwd.getpwuid(os.geteuid()).pw_name)
    with pytest.raises(ConfigError, match="must not run as the job user"):
        SystemdScopeRunner(config, helper=HELPER)
    with pytest.raises(ConfigError, match="no user"):
        SystemdScopeRunner(FakeConfig(temp_dir=str(host.temp_dir), job_user="no-such-user-here"), helper=HELPER)


# ---- the helper's own checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--unit", "fondation-job-x;rm-1"), ("--unit", "sshd"), ("--memory-max", "1G -p Foo=1"),
     ("--cpu-quota", "200"), ("--tasks-max", "-1"), ("--runtime-max-ms", "0")],
)
def test_helper_refuses_odd_arguments(host: FakeHost, flag: str, value: str):
    args = {"--unit": "fondation-job-a-1", "--description": "d", "--memory-max": "1G", "--cpu-quota": "100%",
            "--tasks-max": "8", "--runtime-max-ms": "1000", "--stop-timeout-ms": "1000", flag: value}
    import subprocess

    done = subprocess.run([*HELPER, "run", *(x for item in args.items() for x in item), "--", "true"],
                          input=b"{}", capture_output=True, check=False)
    assert done.returncode == scope.EX_USAGE, done.stderr
    assert b"refusing" in done.stderr
    assert host.calls("systemd-run") == []


def test_helper_refuses_a_bad_environment(host: FakeHost):
    import subprocess

    base = [*HELPER, "run", "--unit", "fondation-job-a-1", "--description", "d", "--memory-max", "1G",
            "--cpu-quota", "100%", "--tasks-max", "8", "--runtime-max-ms", "1000", "--stop-timeout-ms", "1000",
            "--", "true"]
    for payload in (b"not json", b'{"BAD NAME": "x"}', b'{"A": 1}', b"[]"):
        done = subprocess.run(base, input=payload, capture_output=True, check=False)
        assert done.returncode == scope.EX_DATAERR, (payload, done.stderr)


def test_credentials_file(tmp_path: Path):
    home = tmp_path / "home"
    assert read_credentials_file(str(home)) == {}
    path = home / ".config" / "fondation-agent" / "job.env"
    path.parent.mkdir(parents=True)
    path.write_text("# Claude\nANTHROPIC_API_KEY=sk-test\nexport QUOTED='a b'\n\nOTHER=\"x=y\"\n")
    path.chmod(0o600)
    assert read_credentials_file(str(home)) == {"ANTHROPIC_API_KEY": "sk-test", "QUOTED": "a b", "OTHER": "x=y"}
    path.chmod(0o640)
    with pytest.raises(HelperError, match="mode 0600"):
        read_credentials_file(str(home))
    path.chmod(0o600)
    path.write_text("no equals sign\n")
    with pytest.raises(HelperError, match="NAME=value"):
        read_credentials_file(str(home))


def test_scope_oom_kills_reads_memory_events(tmp_path: Path):
    cgroup = tmp_path / "cgroup"
    scope_dir = cgroup / "user.slice" / "user-1.slice" / "app.slice" / "fondation-job-a-1.scope"
    scope_dir.mkdir(parents=True)
    (scope_dir / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    proc = tmp_path / "cgroup-of-self"
    proc.write_text("0::/user.slice/user-1.slice/app.slice/fondation-job-a-1.scope\n")
    assert scope_oom_kills(str(proc), str(cgroup)) == 1
    proc.write_text("4:memory:/x\n")  # cgroup v1 only: unknown
    assert scope_oom_kills(str(proc), str(cgroup)) == 0
    assert scope_oom_kills(str(tmp_path / "missing"), str(cgroup)) == 0


def test_split_oom_marker():
    assert split_oom_marker("boom\nfondation-agent-scope: oom_kill=3 (the scope hit MemoryMax)\n") == ("boom", 3)
    assert split_oom_marker("plain") == ("plain", 0)


def test_hand_back_touches_only_workspaces(tmp_path: Path):
    with pytest.raises(HelperError, match="not a workspace"):
        hand_back(tmp_path)
    (tmp_path / OWNER_FILE).write_text("w\n")
    (tmp_path / "d").mkdir(mode=0o1700)
    (tmp_path / "d" / "f").write_text("x")
    (tmp_path / "d" / "f").chmod(0o700)
    (tmp_path / "link").symlink_to("/etc/hostname")
    assert hand_back(tmp_path) >= 2
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o770
    assert stat.S_IMODE((tmp_path / "d" / "f").stat().st_mode) == 0o770


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workspaces_are_private_unless_temp_dir_is_shared(tmp_path: Path):
    private = Workspace(tmp_path / "plain", "jobP", 1).create("w")  # the process sandbox: 0700
    assert stat.S_IMODE(private.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(private.output.stat().st_mode) == 0o700
    shared_dir = tmp_path / "shared"
    shared_dir.mkdir()
    shared_dir.chmod(0o2750)
    shared = Workspace(shared_dir, "jobS", 1).create("w")  # a setgid temp_dir: the job's group may write
    assert stat.S_IMODE(shared.root.stat().st_mode) == 0o2770
    assert stat.S_IMODE(shared.output.stat().st_mode) == 0o2770
