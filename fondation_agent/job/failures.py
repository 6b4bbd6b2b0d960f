"""What a failed CLI run means: the job's fault, a passing condition, or this host's problem.

Host problems (Claude authentication or billing, a CLI that cannot start) are not the job's: the
attempt is released (not counted) so a healthy host can run it, and enough of them in a row pause
this agent's claiming (host_pause.py). Rate limits and overload retry later with the queue's backoff.
Matching is on the CLI's own error text (stderr, else its last error-level log line).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from fondation_agent.queue.rules import ErrorKind

# Claude Code and the Anthropic API, as they word it: 401 authentication_error ("invalid x-api-key"),
# "Invalid API key · Please run /login", an expired OAuth login, 403 permission_error (Claude Code:
# "Failed to authenticate. API Error: 403 …"), and billing ("Your credit balance is too low to access
# the Anthropic API").
_CLAUDE_AUTH = re.compile(
    r"authentication_error|invalid (?:x-)?api[ -]key|please run /login|oauth token (?:has )?expired"
    r"|failed to authenticate"
    r"|(?:not|no longer) logged in|permission_error|credit balance is too low|plans (?:&|and) billing"
    r"|billing_error",
    re.IGNORECASE,
)
# 429 rate_limit_error and 529 overloaded_error.
_RATE_LIMITED = re.compile(
    r"rate_limit_error|rate limit|too many requests|overloaded"
    r"|\b(?:429|529)\b",
    re.IGNORECASE,
)
# The CLI could not be started at all: node missing its script, systemd-run not finding the program or
# refused the job's unit, the job launcher refusing the job or out of reach (service_runner.py, launcher.py).
_CANNOT_START = re.compile(
    r"Cannot find module '/|ERR_MODULE_NOT_FOUND|Failed to find executable |Failed to start transient service unit"
    r"|fondation-jobs-launcher: |the job launcher"
)
# Host failures that pause claiming at the first (host/pause.py): every job would meet the same
# refused credential, and the job just released must go to another host, not come back here.
PAUSE_AT_ONCE = frozenset({ErrorKind.CLAUDE_AUTH})
HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


@dataclass(frozen=True)
class Kind:
    kind: ErrorKind
    retryable: bool
    host: bool = False  # released rather than failed, and counted towards pausing this host


def classify_cli_failure(text: str) -> Kind:
    """The errorKind of a CLI that exited non-zero, from what it said."""
    if _CLAUDE_AUTH.search(text):
        return Kind(ErrorKind.CLAUDE_AUTH, True, host=True)
    if _RATE_LIMITED.search(text):
        return Kind(ErrorKind.RATE_LIMITED, True)
    if _CANNOT_START.search(text):
        return Kind(ErrorKind.HOST_ERROR, True, host=True)
    return Kind(ErrorKind.CLI_FAILED, True)

