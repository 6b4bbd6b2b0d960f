"""The preflight (fondation_agent/job/preflight.py): the CLI's version command run as a job through the
real process runner, the Claude credential's check, and a worker that claims only once it passed."""

import sys
import time
from concurrent.futures import wait
from pathlib import Path

import pytest

from fondation_agent.config import Config
from fondation_agent.job.preflight import (
    PreflightFailed,
    check_claude_credential,
    preflight_job_id,
    run_preflight,
    version_argv,
)
from fondation_agent.sandbox.process_runner import ProcessRunner
from fondation_agent.worker import Worker

FAKE_CLI = Path(__file__).resolve().parents[1] / "fixtures" / "fake_cli.py"


def config(tmp_path: Path, **settings) -> Config:
    credentials = tmp_path / "claude.env"
    credentials.write_text("ANTHROPIC_API_KEY=test-key\n")
    values = {"convex_url": "http://127.0.0.1:9", "worker_id": "w", "temp_dir": str(tmp_path / "workspaces"),
              "cli_command": f"{sys.executable} {FAKE_CLI} {{repo}} {{output}} {{prompt}}",
              "claude_credentials_file": str(credentials), **settings}
    return Config(**values)


def runner(tmp_path: Path) -> ProcessRunner:
    return ProcessRunner(tmp_path / "groups")


def test_the_version_command_is_the_cli_commands_program_and_script_with_version(tmp_path: Path) -> None:
    default = Config()
    assert version_argv(default) == [*default.cli_command.split()[:2], "--version"]
    assert version_argv(Config(cli_command="/usr/bin/cli {repo}")) == ["/usr/bin/cli", "--version"]
    assert version_argv(Config(cli_command="python3 -I /srv/cli.py --fast {repo} {output}")) == [
        "python3", "-I", "/srv/cli.py", "--fast", "--version"]
    assert version_argv(Config(cli_command="node cli.mjs analyze {repo}", cli_version_command="node cli.mjs -V")) == [
        "node", "cli.mjs", "-V"]


def test_a_cli_that_answers_passes_with_its_version_and_leaves_no_workspace(tmp_path: Path) -> None:
    settings = config(tmp_path)
    assert run_preflight(settings, runner(tmp_path), 1) == "fake-cli 1.0.0"
    assert list(Path(settings.temp_dir).iterdir()) == []


def test_a_missing_cli_fails_naming_its_command(tmp_path: Path) -> None:
    settings = config(tmp_path, cli_command=f"{tmp_path}/no-such-cli analyze {{repo}}")
    with pytest.raises(PreflightFailed, match=f"cannot be started \\({tmp_path}/no-such-cli --version\\)"):
        run_preflight(settings, runner(tmp_path), 1)
    assert list(Path(settings.temp_dir).iterdir()) == []


def test_a_cli_that_fails_says_what_it_printed(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import sys\nsys.exit('cannot find module @anthropic-ai/claude-code')\n")
    settings = config(tmp_path, cli_command=f"{sys.executable} {script} {{repo}}")
    with pytest.raises(PreflightFailed, match="exited with status 1: cannot find module @anthropic-ai/claude-code"):
        run_preflight(settings, runner(tmp_path), 1)


def test_a_cli_that_prints_nothing_or_hangs_fails(tmp_path: Path) -> None:
    silent = config(tmp_path, cli_version_command="/bin/sh -c :")
    with pytest.raises(PreflightFailed, match="printed no version"):
        run_preflight(silent, runner(tmp_path), 1)
    hanging = config(tmp_path, cli_command="/bin/sleep {repo}", cli_version_command="/bin/sleep 600",
                     job_timeout=1.0, kill_grace=0.5)
    with pytest.raises(PreflightFailed, match="did not end within 1 s"):
        run_preflight(hanging, runner(tmp_path), 2)


def test_the_claude_credential_must_be_readable_under_process_and_exist_under_systemd_service(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing yet\n")
    with pytest.raises(PreflightFailed, match=r"claude_credentials_file: .* holds neither"):
        check_claude_credential(config(tmp_path, claude_credentials_file=str(empty)))
    # systemd-service: PID 1 reads it, the agent only sees that it is there.
    check_claude_credential(config(tmp_path, sandbox="systemd-service", claude_credentials_file=str(empty)))
    with pytest.raises(PreflightFailed, match=r"claude_credentials_file: .*missing\.env does not exist"):
        check_claude_credential(config(tmp_path, sandbox="systemd-service",
                                       claude_credentials_file=str(tmp_path / "missing.env")))


def test_workers_of_one_host_have_preflight_ids_of_their_own() -> None:
    assert preflight_job_id("a") != preflight_job_id("b")
    assert preflight_job_id("a") == preflight_job_id("a")


def settle_preflight(agent: Worker) -> None:
    """Waits until the preflight the loop started has ended (the loop takes its verdict at its next turn)."""
    assert agent.preflight_check is not None, "no preflight running"
    wait([agent.preflight_check[1]])


def quiet_worker(config: Config, config_path: Path | None = None) -> tuple[Worker, list[int]]:
    """A worker whose loop turns at once and finds no job: what it claims is recorded."""
    agent = Worker(config, config_path, worker_token="t")
    claims: list[int] = []
    agent.api.claim = lambda lease_ms: claims.append(lease_ms)  # no job
    agent._read_queue_depth = lambda: None
    agent._sleep = lambda seconds: None
    return agent, claims


def test_a_worker_whose_preflight_fails_claims_nothing_says_why_and_claims_after_a_reload(tmp_path: Path) -> None:
    broken = config(tmp_path, cli_command=f"{tmp_path}/no-such-cli {{repo}}")
    agent, claims = quiet_worker(broken)
    statuses: list[str] = []
    agent.notifier.status = statuses.append
    assert agent._tick()
    settle_preflight(agent)
    assert agent._tick()
    assert claims == []
    agent.last_convex_ok = time.monotonic()  # Convex answered: the preflight is what is wrong
    healthy, body = agent.health()
    assert not healthy and "preflight" in body["reason"] and "no-such-cli --version" in body["reason"]
    assert body["cli_version"] is None
    assert "paused claiming until" in statuses[-1] and "no-such-cli --version" in statuses[-1]
    agent.host_pause.resume()  # the pause is over, the rerun has not reported: still no healthy host
    healthy, body = agent.health()
    assert not healthy and "preflight failed" in body["reason"] and "no-such-cli --version" in body["reason"]
    assert "preflight failed" in agent._status_line()

    fixed = tmp_path / "agent.toml"  # the operator fixes cli_command and reloads
    fixed.write_text(f'convex_url = "{broken.convex_url}"\nworker_id = "w"\ntemp_dir = "{broken.temp_dir}"\n'
                     f'claude_credentials_file = "{broken.claude_credentials_file}"\n'
                     f'cli_command = "{sys.executable} {FAKE_CLI} {{repo}} {{output}} {{prompt}}"\n')
    agent.config_path = fixed
    agent.reload_requested = True
    assert agent._tick()
    settle_preflight(agent)
    assert agent._tick()
    assert claims and agent.cli_version == "fake-cli 1.0.0"
    healthy, body = agent.health()
    assert healthy and body["cli_version"] == "fake-cli 1.0.0"


def test_a_worker_whose_slots_are_all_busy_runs_its_preflight_once_one_is_free(tmp_path: Path) -> None:
    agent = Worker(config(tmp_path), None, worker_token="t")
    agent.jobs["job1"] = (None, None)  # a reload while the one slot is busy
    agent._preflight()
    assert agent.preflight_runs == 0 and agent.preflight_check is None
    agent.jobs.clear()
    agent._preflight()
    assert agent.preflight_runs == 1
    settle_preflight(agent)
    agent._preflight()
    assert agent.preflight_passed


def gated_version_command(gate: Path, version: str) -> str:
    """A version command that prints `version` only once `gate` is gone: a CLI as slow as the test wants."""
    return f"sh -c 'while [ -e {gate} ]; do sleep 0.05; done; echo {version}'"


def test_the_loop_keeps_turning_and_telling_the_watchdog_while_the_preflight_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    agent, claims = quiet_worker(config(tmp_path, cli_version_command=gated_version_command(gate, "slow-cli 2.0")))
    pings: list[None] = []
    agent.notifier.watchdog = lambda: pings.append(None)
    for _ in range(3):
        assert agent._tick()
    assert len(pings) == 3 and agent.preflight_runs == 1 and not agent.preflight_passed
    assert claims == [], "nothing is claimed before the preflight passed"
    gate.unlink()
    settle_preflight(agent)
    assert agent._tick()
    assert agent.cli_version == "slow-cli 2.0" and claims


def test_a_reload_during_the_preflight_runs_it_again_with_the_new_config(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    first = config(tmp_path, cli_version_command=gated_version_command(gate, "old-cli 1.0"))
    reloaded = tmp_path / "agent.toml"
    reloaded.write_text(f'convex_url = "{first.convex_url}"\nworker_id = "w"\ntemp_dir = "{first.temp_dir}"\n'
                        f'claude_credentials_file = "{first.claude_credentials_file}"\n'
                        f'cli_command = "{first.cli_command}"\ncli_version_command = "echo new-cli 2.0"\n')
    agent, claims = quiet_worker(first, reloaded)
    assert agent._tick()
    stale = agent.preflight_check
    agent.reload_requested = True
    assert agent._tick()  # the reload stops the old CLI's version command, whose gate stays
    with pytest.raises(PreflightFailed, match=r"^stopped: "):
        stale[1].result(timeout=60)
    if agent.preflight_check is stale:  # (else it had ended before that turn's preflight step)
        assert agent._tick()  # its verdict is dropped, the new config's preflight starts
    assert agent.preflight_check is not stale and not agent.preflight_passed and claims == []
    settle_preflight(agent)
    assert agent._tick()
    assert agent.preflight_runs == 2 and agent.cli_version == "new-cli 2.0" and claims


def test_a_stop_during_the_preflight_stops_its_job_and_leaves_no_workspace(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()  # never removed: only the stop ends the version command (else its 30 s timeout would)
    agent, claims = quiet_worker(config(tmp_path, cli_version_command=gated_version_command(gate, "slow-cli 2.0")))
    assert agent._tick()
    running = agent.preflight_check
    agent.draining = True
    assert not agent._tick()
    agent._drain()
    assert running is not None and running[1].done() and agent.preflight_check is None
    with pytest.raises(PreflightFailed, match=r"^stopped: the agent is stopping or reloading$"):
        running[1].result()
    assert [p.name for p in Path(agent.config.temp_dir).iterdir() if p.name.startswith("preflight_")] == []
    assert claims == []
