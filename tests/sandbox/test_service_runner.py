"""The agent's side of the systemd-service runner, against a stand-in launcher on a Unix socket.

The stand-in speaks the launcher's protocol with the launcher's own code (Connection, parse_run) and
runs the CLI as a plain child with the pipes it was sent, as systemd-run --pipe would. The real
launcher and systemd are tested in the VM tier (tests/system/)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from fondation_agent.sandbox.launcher import Connection, LauncherError, parse_run
from fondation_agent.sandbox.runner import Limits, SandboxUnusable
from fondation_agent.sandbox.service_runner import SystemdServiceRunner
from fondation_agent.sandbox.workspace import Workspace

LIMITS = Limits(timeout=60, kill_grace=2, memory_max="1G", cpu_quota="100%", tasks_max=64)


class StandInLauncher(threading.Thread):
    def __init__(self, path: Path, workspaces: Path):
        super().__init__(daemon=True)
        self.path, self.workspaces = path, workspaces
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.running: dict[str, subprocess.Popen] = {}
        self.requests: list[dict] = []

    def run(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(sock,), daemon=True).start()

    def serve(self, sock: socket.socket) -> None:
        connection = Connection(sock)
        with sock:
            request, fds = connection.receive()
            self.requests.append(request)
            if request["op"] == "leftovers":
                connection.send(units=[], workspaces=[])
            elif request["op"] == "stop":
                self.running[request["unit"]].send_signal(signal.SIGTERM)
                connection.send(ok=True)
            else:
                try:
                    job = parse_run(request, workspaces=self.workspaces, agent_uid=os.getuid())
                except LauncherError as error:
                    for fd in fds:  # as the real launcher's exit would
                        os.close(fd)
                    connection.send(error=f"fondation-jobs-launcher: {error}", status=error.status)
                    return
                process = subprocess.Popen(job.argv, stdout=fds[0], stderr=fds[1], env=dict(job.env), cwd=job.repo)
                for fd in fds:
                    os.close(fd)
                self.running[job.unit] = process
                connection.send(event="started", unit=f"{job.unit}.service", user="fondation-job-1")
                code = process.wait()
                result = "success" if code == 0 else "signal" if code < 0 else "exit-code"
                connection.send(event="finished", result=result, exit_code=code, handed_back=0)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def setup(tmp_path: Path):
    workspaces = tmp_path / "workspaces"
    launcher = StandInLauncher(tmp_path / "launcher.sock", workspaces)
    launcher.start()
    runner = SystemdServiceRunner(SimpleNamespace(worker_id="w1", temp_dir=str(workspaces)),
                                  socket_path=str(launcher.path), workspaces=workspaces)
    workspace = Workspace(workspaces, "job1", 1).create("w1")
    workspace.repo.mkdir()
    yield runner, launcher, workspace
    launcher.close()


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_cli_runs_through_the_launcher_with_its_pipes(setup) -> None:
    runner, launcher, workspace = setup
    assert launcher.requests[0] == {"op": "leftovers", "worker": "w1"}
    cli = runner.start(python("import os; print('one'); print(os.environ.get('HOME', 'no home'))"),
                       env={"HOME": "/var/lib/fondation-agent", "LANG": "C.UTF-8"}, cwd=workspace.repo,
                       unit="fondation-job-job1-1", limits=LIMITS)
    assert list(cli.stdout_lines()) == ["one", "no home"]  # HOME is the launcher's to set
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code) == ("success", 0)
    run = launcher.requests[1]
    assert run["description"] == "fondation-agent fondation-job-job1-1 for worker w1"
    assert run["limits"] == {"memory_max": "1G", "cpu_quota": "100%", "tasks_max": 64, "runtime_max_ms": 60000,
                             "stop_timeout_ms": 2000}
    assert (workspace.root / "home").is_dir()


def test_a_failing_cli_reports_its_status_and_stderr(setup) -> None:
    runner, _, workspace = setup
    cli = runner.start(python("import sys; sys.stderr.write('it broke\\n'); sys.exit(3)"), env={},
                       cwd=workspace.repo, unit="fondation-job-job1-1", limits=LIMITS)
    assert list(cli.stdout_lines()) == []
    outcome = cli.wait()
    assert (outcome.result, outcome.exit_code, outcome.stderr_tail) == ("exit-code", 3, "it broke")


def test_stop_asks_the_launcher_and_the_outcome_says_stopped(setup) -> None:
    runner, launcher, workspace = setup
    cli = runner.start(python("import time; print('up', flush=True); time.sleep(600)"), env={},
                       cwd=workspace.repo, unit="fondation-job-job1-1", limits=LIMITS)
    lines = cli.stdout_lines()
    assert next(lines) == "up"
    cli.stop()
    outcome = cli.wait()
    assert outcome.result == "stopped"
    assert {"op": "stop", "unit": "fondation-job-job1-1"} in launcher.requests


def test_a_refused_request_fails_the_job_with_the_launchers_reason(setup) -> None:
    runner, _, workspace = setup
    cli = runner.start(["./relative-cli"], env={}, cwd=workspace.repo, unit="fondation-job-job1-1", limits=LIMITS)
    assert list(cli.stdout_lines()) == []
    outcome = cli.wait()
    assert outcome.result == "refused", "the agent's own bad request: its error, not the host's"
    assert "fondation-jobs-launcher: argv: the command must be a name on PATH" in outcome.stderr_tail


def test_without_a_launcher_the_agent_does_not_start(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    config = SimpleNamespace(worker_id="w1", temp_dir=str(workspaces))
    with pytest.raises(SandboxUnusable, match=r"cannot reach the job launcher .* fondation-jobs-launcher\.socket"):
        SystemdServiceRunner(config, socket_path=str(tmp_path / "none.sock"), workspaces=workspaces)
    with pytest.raises(SandboxUnusable, match="temp_dir: must be"):
        SystemdServiceRunner(SimpleNamespace(worker_id="w1", temp_dir="/srv/elsewhere"), workspaces=workspaces)
