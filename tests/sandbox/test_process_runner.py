"""The process runner: output, timeout and stop take the whole process group down."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from fondation_agent.sandbox.process_runner import ProcessRunner
from fondation_agent.sandbox.runner import Limits

pytestmark = pytest.mark.timeout(60)
LIMITS = Limits(timeout=30, kill_grace=0.5, memory_max="1G", cpu_quota="100%", tasks_max=64)
STUBBORN_TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def start(code: str, tmp_path: Path, limits: Limits = LIMITS, env: dict | None = None):
    repo = tmp_path / "workspace" / "repo"  # the runner makes the job's home/ and tmp/ beside it
    repo.mkdir(parents=True, exist_ok=True)
    return ProcessRunner(tmp_path / "records").start([sys.executable, "-c", code], env=env or {"PATH": "/usr/bin:/bin"},
                                 cwd=repo, unit="fondation-job-test-1", limits=limits)


def test_stdout_lines_exit_status_and_stderr_tail(tmp_path):
    cli = start("import sys; print('one'); print('two'); sys.stderr.write('x' * 20000 + 'END'); sys.exit(4)", tmp_path)
    assert list(cli.stdout_lines()) == ["one", "two"]
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code) == ("exit-code", 4)
    assert outcome.stderr_tail.endswith("END") and len(outcome.stderr_tail) <= 8192


def test_only_the_given_environment_and_a_fresh_home_and_tmpdir_reach_the_cli(tmp_path):
    cli = start("import os; print(sorted(os.environ)); print(os.environ['HOME'], os.environ['TMPDIR'])", tmp_path,
                env={"PATH": "/usr/bin:/bin", "A": "1", "HOME": "/root", "TMPDIR": "/tmp"})
    names, dirs = list(cli.stdout_lines())
    assert cli.wait().result == "success"
    assert names.replace("'LC_CTYPE', ", "") == "['A', 'HOME', 'PATH', 'TMPDIR']"
    workspace = tmp_path / "workspace"
    assert dirs == f"{workspace / 'home'} {workspace / 'tmp'}"
    assert all(oct((workspace / d).stat().st_mode & 0o777) == "0o700" for d in ("home", "tmp"))


def test_timeout_kills_a_tree_that_ignores_sigterm(tmp_path):
    cli = start(STUBBORN_TREE, tmp_path, Limits(1.0, 0.5, "1G", "100%", 64))
    child = int(next(iter(cli.stdout_lines())))
    outcome = cli.wait()
    assert outcome.result == "timeout"
    assert not alive(cli.pid) and not alive(child)


def test_stop_kills_a_tree_that_ignores_sigterm_after_the_grace(tmp_path):
    cli = start(STUBBORN_TREE, tmp_path)
    child = int(next(iter(cli.stdout_lines())))
    started = time.monotonic()
    cli.stop()
    cli.stop()  # idempotent
    outcome = cli.wait()
    assert outcome.result == "stopped"
    assert time.monotonic() - started < 10
    assert not alive(cli.pid) and not alive(child)


def test_children_left_behind_by_a_finished_cli_are_killed(tmp_path):
    code = "import subprocess, sys; c = subprocess.Popen(['sleep', '600']); print(c.pid, flush=True)"
    cli = start(code, tmp_path)
    child = int(next(iter(cli.stdout_lines())))
    assert cli.wait().result == "success"
    assert not alive(child)


def test_a_restarted_runner_kills_the_groups_an_earlier_one_left(tmp_path):
    cli = start(STUBBORN_TREE, tmp_path)
    child = int(next(iter(cli.stdout_lines())))
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["fondation-job-test-1.pgid"]
    assert ProcessRunner(tmp_path / "records").cleanup_leftovers() == ["fondation-job-test-1"]
    assert cli.wait().result == "signal"
    assert not alive(cli.pid) and not alive(child)
    assert not list((tmp_path / "records").iterdir())


def test_a_stale_record_of_a_recycled_pid_kills_nothing(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "fondation-job-old-1.pgid").write_text(f"{os.getpid()} 1\n")  # our pid, another start time
    assert ProcessRunner(records).cleanup_leftovers() == []
    assert not list(records.iterdir())
