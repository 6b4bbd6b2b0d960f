"""Failure classes of a CLI run, and the host pause they lead to."""

from __future__ import annotations

import pytest

from fondation_agent.host.pause import HostPause
from fondation_agent.job.failures import PAUSE_AT_ONCE, classify_cli_failure
from fondation_agent.sandbox.gateway.attempts import Verdict
from fondation_agent.sandbox.runner import RunResult


@pytest.mark.parametrize(
    ("result", "verdict", "kind", "retryable", "host"),
    [
        (RunResult.EXIT_CODE, Verdict.CLAUDE_AUTH, "claude_auth", True, True),
        (RunResult.TIMEOUT, Verdict.CLAUDE_AUTH, "claude_auth", True, True),
        (RunResult.EXIT_CODE, Verdict.RATE_LIMITED, "rate_limited", True, False),
        (RunResult.EXIT_CODE, Verdict.BUDGET_EXCEEDED, "budget_exceeded", False, False),
        (RunResult.EXIT_CODE, None, "cli_failed", True, False),
        (RunResult.SIGNAL, None, "crashed", True, False),
        (RunResult.TIMEOUT, None, "timeout", True, False),
        (RunResult.OOM_KILL, None, "oom", False, False),
        (RunResult.REFUSED, None, "agent_error", False, False),
        (RunResult.REFUSED, Verdict.CLAUDE_AUTH, "agent_error", False, False),  # the CLI never ran
        (RunResult.UNAVAILABLE, None, "host_error", True, True),
    ],
)
def test_facts_the_job_cannot_forge_tell_the_failure_apart(result, verdict, kind, retryable, host):
    classified = classify_cli_failure(result, verdict)
    assert (classified.kind, classified.retryable, classified.host) == (kind, retryable, host)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_pause_starts_after_the_threshold_and_doubles_to_its_cap():
    clock = Clock()
    pause = HostPause(3, 60, 150, clock=clock)
    assert pause.host_failure("host_error", "a") is None
    assert pause.host_failure("host_error", "b") is None
    assert pause.host_failure("host_error", "c") == 60
    assert pause.paused_for() == 60 and "3 host failures in a row, the last host_error: c" in pause.describe()
    clock.now += 60
    assert pause.paused_for() == 0 and pause.describe() == ""
    assert pause.host_failure("host_error", "d") == 120  # the probe after a pause failed too
    clock.now += 120
    assert pause.host_failure("host_error", "e") == 150  # capped
    pause.job_ended_normally()
    assert pause.paused_for() == 0
    assert pause.host_failure("host_error", "f") is None  # a fresh streak


def test_a_reload_ends_the_pause_and_allows_one_probe():
    clock = Clock()
    pause = HostPause(3, 60, 1800, clock=clock)
    assert not pause.resume(), "nothing to resume: the streak is untouched"
    for message in "abc":
        pause.host_failure("host_error", message)
    assert pause.resume() and pause.paused_for() == 0
    assert pause.host_failure("host_error", "d") == 60, "one more failure pauses again, from the start"


def test_a_refused_claude_credential_pauses_at_once_so_its_job_goes_to_another_host():
    assert classify_cli_failure(RunResult.EXIT_CODE, Verdict.CLAUDE_AUTH).kind in PAUSE_AT_ONCE
    assert classify_cli_failure(RunResult.UNAVAILABLE, None).kind not in PAUSE_AT_ONCE
    clock = Clock()
    pause = HostPause(3, 60, 1800, clock=clock)
    assert pause.host_failure("claude_auth", "Invalid API key", at_once=True) == 60
    assert "1 host failure in a row, the last claude_auth: Invalid API key" in pause.describe()
    clock.now += 60
    assert pause.host_failure("claude_auth", "Invalid API key", at_once=True) == 120
