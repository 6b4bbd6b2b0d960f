"""The preflight: before it claims, can this host run a job at all?

At start and at each reload (SIGHUP) the worker runs the CLI's version command (`cli_version_command`;
by default `cli_command`'s program and script with `--version`, see `version_argv`) AS A JOB: through
the configured runner, so as a job user in the production sandbox, with the job's limits and its own
workspace, under a short timeout. And it checks the Claude credential is there for whoever reads it
(`check_claude_credential`). A host that fails claims nothing: the worker pauses claiming (host
pause, kind `preflight`), says why in STATUS=, /health and the log, and tries again when the pause
ends or at the next reload.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import threading
from pathlib import Path

from fondation_agent.config import CLI_PLACEHOLDERS, Config
from fondation_agent.job.cli_contract import cli_environment
from fondation_agent.job.untrusted import clean_text
from fondation_agent.sandbox.gateway.credentials import CredentialsError, read_credentials
from fondation_agent.sandbox.runner import DiskUnavailable, Limits, Runner, RunningCli, RunResult
from fondation_agent.sandbox.workspace import Workspace

PAUSE_KIND = "preflight"  # the host pause's and host_failures_total's kind
TIMEOUT_S = 30.0  # a CLI that takes longer to print its version is broken
VERSION_OPTION = "--version"
MAX_VERSION_CHARS = 200
KEPT_LINES = 5
# A trailing word of the program's part that is a subcommand (`analyze`), not the script.
_SUBCOMMAND = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class PreflightFailed(Exception):
    """Why this host cannot run a job: one line, for STATUS=, /health and the log."""


class Stopper:
    """Stops a preflight's job from another thread: an agent that is stopping or reloading does not
    wait for a verdict it will not use (under a slow sandbox that is most of a restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cli: RunningCli | None = None
        self.stopped = False

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            cli = self._cli
        if cli is not None:
            cli.stop()

    def started(self, cli: RunningCli) -> None:
        with self._lock:
            self._cli = cli
            stopped = self.stopped
        if stopped:
            cli.stop()


def version_argv(config: Config) -> list[str]:
    """`cli_version_command`, else `cli_command`'s words before its first placeholder, without a
    trailing subcommand, then `--version`: `node /opt/…/cli.bundled.mjs analyze {repo} --profile
    production` gives `node /opt/…/cli.bundled.mjs --version`."""
    if config.cli_version_command:
        return shlex.split(config.cli_version_command)
    words = []
    for word in config.cli_argv_template:
        if any(placeholder in word for placeholder in CLI_PLACEHOLDERS):
            break
        words.append(word)
    while len(words) > 1 and _SUBCOMMAND.fullmatch(words[-1]):
        words.pop()
    return [*words, VERSION_OPTION]


def preflight_job_id(worker_id: str) -> str:
    """A job id of this worker's own (workers of one host share the workspaces and unit names)."""
    return "preflight_" + hashlib.sha256(worker_id.encode("utf-8")).hexdigest()[:16]


def check_claude_credential(config: Config) -> None:
    """The Claude credential is there for whoever reads it: under `process` the agent's in-process
    gateway (it must read it); under `systemd-service` the gateway service, whose file the agent can
    only see exists (the launcher refuses the version job itself while the gateway is down)."""
    path = Path(config.claude_credentials_file)
    if config.sandbox == "process":
        try:
            read_credentials(path)
        except CredentialsError as error:
            raise PreflightFailed(str(error)) from None
    elif not os.path.isfile(path):
        raise PreflightFailed(f"claude_credentials_file: {path} does not exist"
                              " (the Claude gateway would have no credential)")


def run_preflight(config: Config, runner: Runner, attempt: int, stopper: Stopper | None = None) -> str:
    """Runs the checks; returns the CLI's version line, or raises PreflightFailed."""
    check_claude_credential(config)
    return _cli_version(config, runner, attempt, stopper or Stopper())


def _cli_version(config: Config, runner: Runner, attempt: int, stopper: Stopper) -> str:
    argv = version_argv(config)
    shown = shlex.join(argv)
    job_id = preflight_job_id(config.worker_id)
    limits = Limits(min(TIMEOUT_S, config.job_timeout), config.kill_grace, config.memory_max, config.cpu_quota,
                    config.tasks_max)
    workspace = Workspace(Path(config.temp_dir), job_id, attempt, runner=runner, disk_max=config.disk_max)
    try:
        try:
            workspace.create(config.worker_id)
        except DiskUnavailable as error:
            raise PreflightFailed(f"no disk for a job: {error}") from None
        workspace.repo.mkdir(mode=0o700)  # an empty clone: the version command reads nothing
        # cli_env, but no Claude credential: printing a version needs none.
        env = cli_environment(output=workspace.output, job_id=job_id, extra=dict(config.cli_env))
        try:
            cli = runner.start(argv, env=env, cwd=workspace.repo, unit=f"fondation-job-{job_id}-{attempt}",
                               limits=limits)
        except OSError as error:
            raise PreflightFailed(f"the CLI cannot be started ({shown}): {error}") from None
        stopper.started(cli)
        lines: list[str] = []

        def read() -> None:  # to the end, so the CLI never blocks on a full pipe
            for line in cli.stdout_lines():
                if line.strip() and len(lines) < KEPT_LINES:
                    lines.append(line)

        reader = threading.Thread(target=read, daemon=True, name="preflight-stdout")
        reader.start()
        outcome = cli.wait()
        reader.join(timeout=5)
    finally:
        workspace.remove()
    if stopper.stopped:
        raise PreflightFailed("stopped: the agent is stopping or reloading")
    said = clean_text(outcome.stderr_tail[-500:], 500) or clean_text(" / ".join(lines), 500)
    if outcome.result == RunResult.TIMEOUT:
        raise PreflightFailed(f"the CLI's version command ({shown}) did not end within {limits.timeout:g} s")
    if outcome.result != RunResult.SUCCESS:
        raise PreflightFailed(f"the CLI's version command ({shown}) failed as a job: "
                              f"{outcome.describe(limits)}" + (f": {said}" if said else ""))
    if not lines:
        raise PreflightFailed(f"the CLI's version command ({shown}) printed no version")
    return clean_text(lines[0], MAX_VERSION_CHARS)
