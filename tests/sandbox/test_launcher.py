"""The job launcher's own checks, without systemd: request validation, the unit it would start, the peer
check, the pool's allocation and the workspace hand-over. The real thing runs in the VM tier
(tests/system/test_35_hostile.py)."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fondation_agent.sandbox import launcher
from fondation_agent.sandbox.launcher import (
    EX_NOPERM,
    LauncherError,
    finished_report,
    free_pool_user,
    give,
    job_properties,
    parse_run,
    serve,
    systemd_run_command,
    write_job_spec,
)
from fondation_agent.sandbox.workspace import is_safe_job_id

ME = os.getuid()


def workspace(tmp_path: Path, name: str = "job1-1") -> Path:
    root = tmp_path / "workspaces" / name
    for part in launcher.WORKSPACE_PARTS:
        (root / part).mkdir(parents=True)
    return root


def request(ws: Path, **changes) -> dict:
    base = {
        "op": "run",
        "unit": "fondation-job-job1-1",
        "description": "fondation-agent fondation-job-job1-1 for worker w1",
        "workspace": str(ws),
        "argv": ["node", "/opt/cli.mjs", "analyze", ws.as_posix() + "/repo", "--prompt", "costs $5 and 100%"],
        "env": {"PATH": "/usr/bin:/bin", "CLAUDE_OUTPUT_DIR": f"{ws}/output"},
        "limits": {"memory_max": "4G", "cpu_quota": "200%", "tasks_max": 512, "runtime_max_ms": 3_600_000,
                   "stop_timeout_ms": 10_000},
    }
    base.update(changes)
    return base


def parse(tmp_path: Path, ws: Path, **changes):
    return parse_run(request(ws, **changes), workspaces=tmp_path / "workspaces", agent_uid=ME)


def test_a_good_request_is_taken_as_it_is(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    run = parse(tmp_path, ws)
    assert (run.unit, run.workspace, run.repo, run.tasks_max) == ("fondation-job-job1-1", ws, ws / "repo", 512)
    assert run.argv[-1] == "costs $5 and 100%"


def test_any_text_but_nul_survives_in_argv_and_environment(tmp_path: Path) -> None:
    prompt = "line one\nline two $HOME `id` \"quoted\" 100%"
    run = parse(tmp_path, workspace(tmp_path), argv=["node", "--prompt", prompt], env={"NOTE": "a\nb"})
    assert run.argv[-1] == prompt and run.env["NOTE"] == "a\nb"


@pytest.mark.parametrize(("changes", "refusal"), [
    ({"unit": "sshd"}, "unit"),
    ({"unit": "fondation-job-a/../b-1"}, "unit"),
    ({"description": "two\nlines"}, "description"),
    ({"description": "bell\x07"}, "description"),
    ({"argv": []}, "argv"),
    ({"argv": ["node", "nul\0byte"]}, "argv"),
    ({"argv": ["./relative/cli"]}, "argv"),
    ({"env": {"HOME": "/root"}}, "HOME is set by the launcher"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "LD_PRELOAD"),
    ({"env": {"BAD-NAME": "x"}}, "env"),
    ({"env": {"A": "nul\0byte"}}, "env A"),

    ({"limits": {"memory_max": "4G; rm", "cpu_quota": "200%", "tasks_max": 512, "runtime_max_ms": 1,
                 "stop_timeout_ms": 1}}, "memory_max"),
    ({"limits": {"memory_max": "4G", "cpu_quota": "2", "tasks_max": 512, "runtime_max_ms": 1,
                 "stop_timeout_ms": 1}}, "cpu_quota"),
    ({"limits": {"memory_max": "4G", "cpu_quota": "2%", "tasks_max": True, "runtime_max_ms": 1,
                 "stop_timeout_ms": 1}}, "tasks_max"),
    ({"limits": {"memory_max": "4G", "cpu_quota": "2%", "tasks_max": 512, "runtime_max_ms": "1",
                 "stop_timeout_ms": 1}}, "runtime_max_ms"),
    ({"workspace": "/etc"}, "workspace"),
    ({"workspace": "relative/job1-1"}, "workspace"),
])
def test_every_field_is_checked(tmp_path: Path, changes: dict, refusal: str) -> None:
    ws = workspace(tmp_path)
    with pytest.raises(LauncherError, match=refusal):
        parse(tmp_path, ws, **changes)


def test_names_match_their_patterns_whole_not_up_to_a_trailing_newline(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    for changes, refusal in (({"unit": "fondation-job-job1-1\n"}, "unit"), ({"workspace": f"{ws}\n"}, "workspace")):
        with pytest.raises(LauncherError, match=refusal):
            parse(tmp_path, ws, **changes)


def test_the_workspace_must_be_the_agents_real_directory(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    with pytest.raises(LauncherError, match="not a directory of the agent's"):
        parse_run(request(ws), workspaces=tmp_path / "workspaces", agent_uid=ME + 1)
    (ws / "home").rmdir()
    (ws / "home").symlink_to("/")
    with pytest.raises(LauncherError, match="not a directory of the agent's"):
        parse(tmp_path, ws)
    link = tmp_path / "workspaces" / "job2-1"
    link.symlink_to(ws)
    with pytest.raises(LauncherError, match="not a directory of the agent's"):
        parse(tmp_path, link, workspace=str(link))


def test_the_unit_is_the_launchers_sandbox_with_only_the_requests_limits(tmp_path: Path) -> None:
    run = parse(tmp_path, workspace(tmp_path))
    properties = job_properties(run, "fondation-job-3")
    for wanted in ("User=fondation-job-3", "NoNewPrivileges=yes", "CapabilityBoundingSet=", "PrivateUsers=yes",
                   "ProtectSystem=strict", "ProtectHome=yes", "PrivateDevices=yes",
                   f"BindPaths={run.workspace}/tmp:/tmp {run.workspace}/tmp:/var/tmp",
                   "SystemCallFilter=@system-service", "UMask=0007", "MemorySwapMax=0", "MemoryMax=4G",
                   "CPUQuota=200%", "TasksMax=512", "RuntimeMaxSec=3600000ms", "TimeoutStopSec=10000ms",
                   f"TemporaryFileSystem={launcher.STATE_DIR}", f"BindPaths={run.workspace}",
                   "PrivateNetwork=yes", "TemporaryFileSystem=/run/fondation-agent-gateway:mode=0755",
                   "BindPaths=/run/fondation-agent-gateway/jobs.sock",
                   "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                   "TemporaryFileSystem=/dev/shm:mode=1777,nosuid,nodev"):
        assert wanted in properties, wanted
    for hidden in ("/run/systemd/transient", launcher.JOBS_CGROUP, "/run/systemd/journal"):
        assert any(p.startswith("InaccessiblePaths=") and f"-{hidden}" in p.split() for p in properties), hidden
    assert not any(p.startswith("EnvironmentFile=") for p in properties)  # no credential: the gateway's
    assert "SystemCallFilter=~io_uring_setup io_uring_enter io_uring_register" in properties
    command = systemd_run_command(run, "fondation-job-3")
    assert command[:4] == ["systemd-run", "--system", "--pipe", "--wait"]
    assert "--slice=fondation-jobs.slice" in command
    assert f"--description={run.description}" in command
    tail = command[command.index("--") + 1:]
    assert tail[-4:] == ["-I", "-m", "fondation_agent.sandbox.job_exec", str(run.workspace / launcher.JOB_SPEC)]
    # Nothing of the job's argv or environment is a unit property (systemctl show shows those to anyone).
    assert not any("costs $5" in arg or "CLAUDE_OUTPUT_DIR" in arg for arg in command), command
    assert "-E" not in command


def test_the_job_spec_is_its_users_alone_and_job_exec_runs_it(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    run = parse(tmp_path, ws, argv=[sys.executable, "-c", "import os, sys; print(sys.argv[1], os.environ['NOTE'])",
                                    "two\nlines"], env={"NOTE": "noted $X"})
    (ws / launcher.JOB_SPEC).symlink_to(tmp_path / "elsewhere")  # whatever was there is replaced, not followed
    write_job_spec(run, ME, os.getgid(), relay_port=0, gateway=str(tmp_path / "jobs.sock"))
    assert stat.S_IMODE((ws / launcher.JOB_SPEC).lstat().st_mode) == 0o400
    assert not (tmp_path / "elsewhere").exists()
    command = systemd_run_command(run, "fondation-job-3")
    done = subprocess.run(command[command.index("--") + 1:], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.stdout == "two\nlines noted $X\n"


@pytest.mark.parametrize(("state", "status", "report"), [
    ({"LoadState": "not-found"}, 0, {"result": "success", "exit_code": 0}),
    ({"LoadState": "loaded", "Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "3"}, 3,
     {"result": "exit-code", "exit_code": 3}),
    ({"LoadState": "loaded", "Result": "signal", "ExecMainCode": "2", "ExecMainStatus": "9"}, 1,
     {"result": "signal", "exit_code": -9}),
    ({"LoadState": "loaded", "Result": "oom-kill", "ExecMainCode": "2", "ExecMainStatus": "9"}, 1,
     {"result": "oom-kill", "exit_code": -9}),
    ({"LoadState": "loaded", "Result": "timeout", "ExecMainCode": "2", "ExecMainStatus": "15"}, 1,
     {"result": "timeout", "exit_code": -15}),
])
def test_how_a_unit_ended_is_reported(state: dict, status: int, report: dict) -> None:
    assert finished_report(state, status) == report


def test_giving_a_tree_never_follows_links_and_drops_set_id_bits(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o400)
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    tool = top / "sub" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4555)
    (top / "sub").chmod(0o500)
    (top / "link").symlink_to(outside)
    changed = give(top, ME, os.getgid())
    assert changed == 4
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755  # owner rw added, setuid gone
    assert stat.S_IMODE((top / "sub").stat().st_mode) == 0o700
    assert stat.S_IMODE(outside.stat().st_mode) == 0o400  # the link's target is not touched
    assert give(top, ME, os.getgid(), only_from=lambda uid: uid != ME) == 0


def test_giving_a_tree_handles_sockets_and_fifos_and_refuses_one_too_deep(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "top"
    (top / "a" / "b").mkdir(parents=True)
    os.mkfifo(top / "fifo")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(top / "sock"))
        assert give(top, ME, os.getgid()) == 5
    monkeypatch.setattr(launcher, "MAX_TREE_DEPTH", 1)
    with pytest.raises(LauncherError, match="deeper than 1 levels"):
        give(top, ME, os.getgid())


def fake_user(name: str, uid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid, "", "/nonexistent", "/usr/sbin/nologin"))


def test_a_pool_user_is_taken_only_when_no_process_runs_as_it_and_no_job_holds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = [fake_user(f"fondation-job-{n}", 60000 + n) for n in (1, 2, 3)]
    monkeypatch.setattr(launcher, "pool_users", lambda: users)
    monkeypatch.setattr(launcher, "uids_running", lambda: {60001})
    held = os.open(tmp_path / "fondation-job-2.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with free_pool_user(tmp_path) as user:
            assert user.pw_name == "fondation-job-3"
            monkeypatch.setattr(launcher, "pool_users", lambda: users[2:])
            with pytest.raises(LauncherError, match="every job user is busy"), free_pool_user(tmp_path):
                pass
    finally:
        os.close(held)


def exchange(agent_user: str, message: dict) -> tuple[int, dict]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(json.dumps(message).encode() + b"\n")
        status = serve(theirs, agent_user=agent_user)
        theirs.shutdown(socket.SHUT_WR)
        return status, json.loads(ours.makefile().readline())


def test_only_the_agents_uid_is_served() -> None:
    me = pwd.getpwuid(ME).pw_name
    other = next(entry.pw_name for entry in pwd.getpwall() if entry.pw_uid != ME)
    status, answer = exchange(other, {"op": "stop", "unit": "fondation-job-a-1"})
    assert status == EX_NOPERM and f"only {other} may start jobs" in answer["error"]
    status, answer = exchange(me, {"op": "reboot"})
    assert status == launcher.EX_USAGE and "unknown op 'reboot'" in answer["error"]


def test_a_job_id_is_a_plain_identifier_whole() -> None:
    assert is_safe_job_id("k57abc_1")
    assert not is_safe_job_id("k57abc\n") and not is_safe_job_id("../x") and not is_safe_job_id("")
