"""What a failed CLI run means: the job's fault, a passing condition, or this host's problem — from
facts the job cannot forge, never from what the CLI printed (a hostile repository makes it print
anything).

The facts: the Claude gateway's verdict on the attempt (the upstream's own status codes, and the
budget it enforces), and the sandbox's answer to the agent's request to run the CLI. Host problems
(a refused credential, a sandbox that cannot run jobs) are not the job's: the attempt is released
(not counted) so a healthy host can run it, and enough of them in a row pause this agent's claiming
(host/pause.py). Rate limits and overload retry later with the queue's backoff.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from fondation_agent.queue.rules import ErrorKind
from fondation_agent.sandbox.gateway.attempts import Verdict
from fondation_agent.sandbox.runner import RunResult

# Host failures that pause claiming at the first (host/pause.py): every job would meet the same
# refused credential, and the job just released must go to another host, not come back here.
PAUSE_AT_ONCE = frozenset({ErrorKind.CLAUDE_AUTH})
HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})


@dataclass(frozen=True)
class Kind:
    kind: ErrorKind
    retryable: bool
    host: bool = False  # released rather than failed, and counted towards pausing this host


# The gateway's verdict on an attempt whose CLI failed: it explains the failure.
VERDICTS = {
    Verdict.CLAUDE_AUTH: Kind(ErrorKind.CLAUDE_AUTH, True, host=True),  # 401/403: this host's credential
    Verdict.RATE_LIMITED: Kind(ErrorKind.RATE_LIMITED, True),  # 429/529: later, with the queue's backoff
    Verdict.BUDGET_EXCEEDED: Kind(ErrorKind.BUDGET_EXCEEDED, False),  # the same job would need as much again
}
# How the CLI run ended, when no verdict explains it.
RESULTS = {
    RunResult.SIGNAL: Kind(ErrorKind.CRASHED, True),
    RunResult.TIMEOUT: Kind(ErrorKind.TIMEOUT, True),
    RunResult.OOM_KILL: Kind(ErrorKind.OOM, False),  # the same limits would kill it again
    RunResult.EXIT_CODE: Kind(ErrorKind.CLI_FAILED, True),
    # The sandbox refused the agent's own request (say, a field it does not accept): a bug of the
    # agent's or bad input, the same on every host.
    RunResult.REFUSED: Kind(ErrorKind.AGENT_ERROR, False),
    RunResult.UNAVAILABLE: Kind(ErrorKind.HOST_ERROR, True, host=True),
}


def classify_cli_failure(result: RunResult, verdict: Verdict | None) -> Kind:
    """The errorKind of a CLI run that did not succeed (nor was stopped)."""
    if verdict is not None and result not in (RunResult.REFUSED, RunResult.UNAVAILABLE):
        return VERDICTS[verdict]
    return RESULTS[result]
