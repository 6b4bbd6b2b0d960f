"""The Claude gateway: the only holder of the Claude credential.

Jobs reach the model through it with a per-attempt token; the agent registers
and deletes attempts over its control socket and reads their usage.
"""

JOB_GATEWAY_PORT = 8790
"""The port a job reaches the gateway on, 127.0.0.1 inside its network namespace (the relay)."""

JOBS_SOCKET = "/run/fondation-agent-gateway/jobs.sock"
"""The jobs listener (mode 0666: jobs connect; the job unit binds it in)."""

CONTROL_SOCKET = "/run/fondation-agent-gateway/control.sock"
"""The control API (mode 0660, group fondation: only agents)."""

CLAIM_PATH = "/fondation-gateway/claim"
"""A job's first request (job_exec.py, before its CLI starts): ties the attempt's token to the user the
job runs as, seen by the jobs socket (SO_PEERCRED); from any other user the token is refused."""

DEFAULT_SETTINGS_PATH = "/etc/fondation-agent/gateway.toml"
