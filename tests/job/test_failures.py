"""Failure classes of a CLI run, and the host pause they lead to."""

from __future__ import annotations

import pytest

from fondation_agent.host.pause import HostPause
from fondation_agent.job.failures import PAUSE_AT_ONCE, classify_cli_failure


@pytest.mark.parametrize(
    ("said", "kind", "retryable", "host"),
    [
        ("Analysis failed: Invalid API key · Please run /login", "claude_auth", True, True),
        ('401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}',
         "claude_auth", True, True),
        ("OAuth token has expired. Please obtain a new token or refresh your existing token.", "claude_auth", True,
         True),
        ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing", "claude_auth",
         True, True),
        ("Claude Code returned an error result: Failed to authenticate. API Error: 403 Your API key does not "
         "have permission to use the specified resource.", "claude_auth", True, True),
        ("Claude Code returned an error result: API Error: Request rejected (429) · Number of request tokens",
         "rate_limited", True, False),
        ('429 {"type":"error","error":{"type":"rate_limit_error"}}', "rate_limited", True, False),
        ('API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
         "rate_limited", True, False),
        ("Failed to find executable /usr/bin/node: No such file or directory", "host_error", True, True),
        ("Error: Cannot find module '/opt/fondation/cli/dist/cli.bundled.mjs'", "host_error", True, True),
        ("fondation-jobs-launcher: every job user is busy: add users fondation-job-<n>", "host_error", True, True),
        ("cannot reach the job launcher at /run/fondation-jobs-launcher.sock: No such file or directory",
         "host_error", True, True),
        ("Failed to start transient service unit: Access denied", "host_error", True, True),
        ("Analysis failed: Failed to create abstractions file", "cli_failed", True, False),
        ("", "cli_failed", True, False),
    ],
)
def test_what_the_cli_said_tells_the_failure_apart(said, kind, retryable, host):
    classified = classify_cli_failure(said)
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
    assert classify_cli_failure("Invalid API key · Fix external API key").kind in PAUSE_AT_ONCE
    assert classify_cli_failure("Cannot find module '/opt/cli.mjs'").kind not in PAUSE_AT_ONCE
    clock = Clock()
    pause = HostPause(3, 60, 1800, clock=clock)
    assert pause.host_failure("claude_auth", "Invalid API key", at_once=True) == 60
    assert "1 host failure in a row, the last claude_auth: Invalid API key" in pause.describe()
    clock.now += 60
    assert pause.host_failure("claude_auth", "Invalid API key", at_once=True) == 120
