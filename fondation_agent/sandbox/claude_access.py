"""How a job reaches Claude: through the Claude gateway, with a token of its own attempt.

Every job gets the same settings (docs/cli-contract.md, "Claude Code"): no non-essential traffic
(telemetry, update checks: connections to api.anthropic.com whatever the base URL says), no
auto-updater, `claude_max_retries` retries (a refused key fails the CLI in seconds, not minutes), and
no `CLAUDE.md` / `CLAUDE.local.md` from the repository injected as instructions. Its
`ANTHROPIC_BASE_URL` is the gateway and its `ANTHROPIC_API_KEY` the attempt's gateway token: never
the credential, which only the gateway reads (sandbox/gateway/).

Under `sandbox = "systemd-service"` the gateway is a service of its own, reached over its control
socket (`gateway_control_socket`); under `process` the agent runs the same gateway in a thread,
reading `claude_credentials_file` itself.
"""

from __future__ import annotations

from pathlib import Path

from fondation_agent.sandbox.gateway.client import (
    ControlClient,
    GatewayAccess,
    InProcessGateway,
    Registration,
    Report,
)
from fondation_agent.sandbox.gateway.credentials import read_credentials

# A token outlives its attempt's longest run by this much at most (the agent deletes it at the end;
# this bounds a token the agent never deleted because it crashed).
TOKEN_MARGIN_S = 300.0


class ClaudeAccess:
    def __init__(self, *, max_retries: int, max_tokens: int = 0, gateway: GatewayAccess | None = None):
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.gateway = gateway  # None: jobs get Claude Code's settings and no way to Claude (tests)

    @classmethod
    def for_agent(cls, *, sandbox: str, credentials_file: str, upstream: str, control_socket: str,
                  max_retries: int, max_tokens: int) -> ClaudeAccess:
        """The gateway of the agent's sandbox (raises CredentialsError when the agent runs it and the
        credentials file gives none)."""
        if sandbox == "process":
            credential = read_credentials(Path(credentials_file))
            gateway: GatewayAccess = InProcessGateway(credential=credential, upstream=upstream).start()
        else:
            gateway = ControlClient(control_socket)
        return cls(max_retries=max_retries, max_tokens=max_tokens, gateway=gateway)

    def register(self, job_id: str, attempt: int, longest_run_s: float) -> Registration | None:
        """A token for one attempt (raises GatewayUnavailable); None without a gateway."""
        if self.gateway is None:
            return None
        return self.gateway.register(job_id, attempt, self.max_tokens, longest_run_s + TOKEN_MARGIN_S)

    def read(self, registration: Registration) -> Report | None:
        """The attempt's usage and verdict so far (raises GatewayUnavailable)."""
        return self.gateway.read(registration.id) if self.gateway is not None else None

    def end(self, registration: Registration) -> Report | None:
        """Revokes the attempt's token; its final usage and verdict (raises GatewayUnavailable)."""
        return self.gateway.delete(registration.id) if self.gateway is not None else None

    def job_environment(self, registration: Registration | None) -> dict[str, str]:
        """Claude Code's variables for one job attempt: the gateway and the attempt's token, if any."""
        reach = {} if registration is None or self.gateway is None else {
            "ANTHROPIC_BASE_URL": self.gateway.url, "ANTHROPIC_API_KEY": registration.token}
        return {
            **reach,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(self.max_retries),
            "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
        }

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
