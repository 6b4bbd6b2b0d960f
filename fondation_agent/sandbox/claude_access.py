"""How a job reaches Claude: Claude Code's settings in the job's environment, and the credential.

Every job gets the same settings (docs/cli-contract.md, "Claude Code"): `ANTHROPIC_BASE_URL` =
`claude_upstream`, no non-essential traffic (telemetry, update checks: connections to
api.anthropic.com whatever the base URL says), no auto-updater, `claude_max_retries` retries (a
refused key fails the CLI in seconds, not minutes), and no `CLAUDE.md` / `CLAUDE.local.md` from the
repository injected as instructions.

The credential (`ANTHROPIC_API_KEY=` or `CLAUDE_CODE_OAUTH_TOKEN=`) comes from
`claude_credentials_file`. Under `sandbox = "process"` the agent reads it at start and hands it to
each job; under `systemd-service` the job launcher (root) adds that file to the job's unit, and the
agent never reads it. The Claude gateway (DESIGN.md) replaces both with a per-attempt token and
its own URL: that swap is `ClaudeAccess.job_environment()`'s alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CREDENTIAL_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")


class CredentialsError(Exception):
    """The credentials file gives no credential: one line naming the key (the agent stops, exit 2)."""


def read_credentials(path: Path) -> dict[str, str]:
    """The credential variables of an env file (`NAME=value` lines, `#` comments, optional quotes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise CredentialsError(f"claude_credentials_file: cannot read {path}: {reason}") from None
    found = {}
    for line in text.splitlines():
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if sep and name.strip() in CREDENTIAL_VARIABLES and value:
            found[name.strip()] = value
    if not found:
        raise CredentialsError(f"claude_credentials_file: {path} holds neither "
                               f"{' nor '.join(f'{n}=' for n in CREDENTIAL_VARIABLES)}")
    return found


class ClaudeAccess:
    def __init__(self, *, upstream: str, max_retries: int, credential: Mapping[str, str] | None = None):
        self.upstream = upstream
        self.max_retries = max_retries
        self._credential = dict(credential or {})

    @classmethod
    def for_agent(cls, *, sandbox: str, credentials_file: str, upstream: str, max_retries: int) -> ClaudeAccess:
        """Reads the credential where the agent hands it to jobs itself (raises CredentialsError)."""
        # Under systemd-service the job launcher adds the file to the job's unit.
        credential = read_credentials(Path(credentials_file)) if sandbox == "process" else {}
        return cls(upstream=upstream, max_retries=max_retries, credential=credential)

    def job_environment(self) -> dict[str, str]:
        """Claude Code's variables for one job attempt (the credential included, where the agent holds it)."""
        return {
            "ANTHROPIC_BASE_URL": self.upstream,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(self.max_retries),
            "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
            **self._credential,
        }
