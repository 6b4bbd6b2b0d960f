"""Configuration: a TOML file, every key overridable from the environment, validated as a whole.

Environment names: `FONDATION_AGENT_<KEY>` for every key, plus the seed's historical names
(`CONVEX_URL`, `WORKER_ID`, `POLL_INTERVAL`, …), which keep working. Durations are in seconds.
The worker token is never a config value: it is read from `worker_token_file` or from systemd's
`$CREDENTIALS_DIRECTORY/worker-token`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fondation_agent.queue.rules import MAX_DOC_CONTENT_BYTES, MAX_DOCS_PER_JOB
from fondation_agent.sandbox.gateway import CONTROL_SOCKET
from fondation_agent.sandbox.launcher import JOB_CREDENTIALS, MIN_DISK_BYTES

DEFAULT_CONFIG_PATH = Path("/etc/fondation-agent/agent.toml")
# A worker instance's name (the unit's %i) becomes a file name: nothing that could leave the directory.
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}")
DEFAULT_CLI_COMMAND = "node /opt/fondation/cli/current/dist/cli.bundled.mjs analyze {repo} --profile production"
CLI_PLACEHOLDERS = ("{repo}", "{output}", "{prompt}", "{job_id}")
SANDBOXES = ("process", "systemd-service")
WAKE_MODES = ("subscription", "poll")
# The mechanism's old name (a scope of a user manager) keeps working and means the same runner.
SANDBOX_ALIASES = {"systemd-scope": "systemd-service"}
CREDENTIAL_NAME = "worker-token"
DEFAULT_TOKEN_PATH = Path("/etc/fondation-agent") / CREDENTIAL_NAME


# Keys of earlier versions that mean nothing any more: accepted (a kept conffile still has them), ignored
# with a warning (Config.notices) saying why.
_NO_NETWORK = "ignored: jobs reach only the Claude gateway (docs/operations.md, \"What a job can and cannot do\")"
OBSOLETE_KEYS = {
    "job_user": "ignored: jobs run as the pool of users fondation-job-<n>",
    "job_network_allow": _NO_NETWORK,
    "job_network_deny": _NO_NETWORK,
}


class ConfigError(Exception):
    """Every problem found, one line each, naming the key."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _env(*names: str) -> dict[str, Any]:
    return {"env": names}


@dataclass(frozen=True)
class Config:
    convex_url: str = field(default="", metadata=_env("CONVEX_URL"))
    worker_id: str = field(default="", metadata=_env("WORKER_ID"))
    worker_token_file: str = ""
    concurrency: int = field(default=1, metadata=_env("MAX_CONCURRENT_JOBS"))
    poll_interval: float = field(default=2.0, metadata=_env("POLL_INTERVAL"))
    # How an idle agent learns of a job (wake.py): a Convex subscription, or polling every poll_interval.
    wake: str = "subscription"
    safety_poll_interval: float = 300.0
    wake_jitter: float = 0.1
    lease_time: float = field(default=60.0, metadata=_env("LEASE_TIME"))
    heartbeat_interval: float = field(default=20.0, metadata=_env("HEARTBEAT_INTERVAL"))
    temp_dir: str = field(default="/var/lib/fondation-agent/workspaces", metadata=_env("TEMP_DIR"))
    job_timeout: float = field(default=3600.0, metadata=_env("JOB_TIMEOUT"))
    drain_timeout: float = 300.0
    kill_grace: float = 10.0
    # Repositories
    allowed_hosts: tuple[str, ...] = ("github.com",)
    allow_local_repositories: bool = False  # demos and tests only: file:// URLs and local paths
    clone_timeout: float = 300.0
    clone_max_bytes: int = 1024**3
    clone_max_files: int = 100_000
    git_token_file: str = ""
    # Whose repositories get the token ("OWNER" on github.com, or "HOST/OWNER"); all others clone anonymously.
    git_token_owners: tuple[str, ...] = ()
    # The CLI and its sandbox
    cli_command: str = DEFAULT_CLI_COMMAND
    # The preflight's (job/preflight.py); empty: cli_command's program and script with --version.
    cli_version_command: str = ""
    cli_env: Mapping[str, str] = field(default_factory=dict)
    sandbox: str = "process"
    # `process` under systemd only with this: a forgotten `sandbox` key must not run jobs as the agent's user.
    allow_unisolated: bool = False
    memory_max: str = "4G"
    cpu_quota: str = "200%"
    tasks_max: int = 512
    # A job's own file system (systemd-service): its workspace (the clone), home and /tmp together.
    disk_max: int = 10 * 1024**3
    # Claude (claude_access.py): the credential's env file, the Anthropic API, Claude Code's retries.
    claude_credentials_file: str = JOB_CREDENTIALS
    claude_upstream: str = "https://api.anthropic.com"
    claude_max_retries: int = 2
    # A job attempt's Claude budget in tokens (input + output, counted by the gateway); 0: no budget.
    claude_max_tokens: int = 0
    # The Claude gateway service's control socket (sandbox = systemd-service; sandbox/gateway/).
    gateway_control_socket: str = CONTROL_SOCKET
    # Results
    max_doc_bytes: int = 900_000
    max_docs: int = 500
    max_output_bytes: int = 50 * 1024**2
    # Observability
    metrics_address: str = "127.0.0.1:9810"
    log_format: str = "json"
    health_max_silence: float = 60.0
    # A host whose attempts keep failing host-side (host_pause.py) stops claiming for a while.
    host_failure_threshold: int = 3
    host_pause_initial: float = 60.0
    host_pause_max: float = 1800.0
    # Convex client
    convex_timeout: float = 15.0
    # Not a key: the warnings of load_config (obsolete keys), for check-config's output and the agent's log.
    notices: tuple[str, ...] = field(default=(), metadata={"internal": True})

    @property
    def lease_ms(self) -> int:
        return int(self.lease_time * 1000)

    @property
    def cli_argv_template(self) -> list[str]:
        return shlex.split(self.cli_command)

    def worker_token(self) -> str:
        return read_worker_token(self.worker_token_file)


def _token_path(configured: str) -> Path:
    if configured:
        return Path(configured)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials) / CREDENTIAL_NAME
    return DEFAULT_TOKEN_PATH


def read_worker_token(configured: str) -> str:
    path = _token_path(configured)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError([f"worker_token_file: cannot read {path}: {error.strerror}"]) from error
    if not token:
        raise ConfigError([f"worker_token_file: {path} is empty"])
    return token


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if not f.metadata.get("internal")}


def _env_names(name: str) -> tuple[str, ...]:
    return (f"FONDATION_AGENT_{name.upper()}", *_FIELDS[name].metadata.get("env", ()))


def _coerce(name: str, raw: Any, from_env: bool) -> Any:
    """Turns a TOML or environment value into the field's type, or raises ValueError."""
    kind = _FIELDS[name].type
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if from_env and str(raw).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(raw).lower() in ("1", "true", "yes", "on")
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind == "int":
        if isinstance(raw, bool) or not (isinstance(raw, int) or (from_env and str(raw).strip().isdigit())):
            raise ValueError(f"expected a whole number, got {raw!r}")
        return int(raw)
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError(f"expected a number of seconds, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of seconds, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number of seconds, got {raw!r}")
        return value
    if kind == "tuple[str, ...]":
        items = [item.strip() for item in raw.split(",")] if from_env else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError("expected a list of strings")
        return tuple(item for item in items if item)
    if kind == "Mapping[str, str]":
        if from_env or not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise ValueError("expected a table of strings (set it in the file, not the environment)")
        return dict(raw)
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


_TOKEN_OWNER_RE = re.compile(r"(?:[a-z0-9.-]+/)?[A-Za-z0-9][A-Za-z0-9_.-]*")


def started_by_systemd(environ: Mapping[str, str]) -> bool:
    """systemd sets INVOCATION_ID for every unit it starts (systemd.exec(5)): where production agents run."""
    return bool(environ.get("INVOCATION_ID"))


def _validate(config: Config, *, under_systemd: bool) -> list[str]:
    problems = []

    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            problems.append(f"{key}: {message}")

    url = urlparse(config.convex_url)
    require(
        url.scheme in ("http", "https") and bool(url.netloc),
        "convex_url",
        f"must be an http(s) URL of a Convex deployment, got {config.convex_url!r}",
    )
    require(0 < len(config.worker_id) <= 200, "worker_id", "must be 1-200 characters")
    require(1 <= config.concurrency <= 64, "concurrency", "must be from 1 to 64")
    require(0.05 <= config.poll_interval <= 300, "poll_interval", "must be from 0.05 to 300 seconds")
    require(config.wake in WAKE_MODES, "wake", f"must be one of {', '.join(WAKE_MODES)}")
    require(1 <= config.safety_poll_interval <= 3600, "safety_poll_interval", "must be from 1 to 3600 seconds")
    require(0 <= config.wake_jitter <= 10, "wake_jitter", "must be from 0 to 10 seconds")
    require(2 <= config.lease_time <= 3600, "lease_time", "must be from 2 to 3600 seconds")
    require(
        0.1 <= config.heartbeat_interval <= config.lease_time / 2,
        "heartbeat_interval",
        f"must be from 0.1 s to half of lease_time ({config.lease_time / 2:g} s); about a third is best",
    )
    for key in ("job_timeout", "drain_timeout", "clone_timeout", "kill_grace", "convex_timeout"):
        require(getattr(config, key) > 0, key, "must be more than 0 seconds")
    require(Path(config.temp_dir).is_absolute(), "temp_dir", "must be an absolute path")
    require(
        bool(config.allowed_hosts) or config.allow_local_repositories,
        "allowed_hosts",
        "must name at least one host",
    )
    for owner in config.git_token_owners:
        require(
            bool(_TOKEN_OWNER_RE.fullmatch(owner)),
            "git_token_owners",
            f"{owner!r} must be OWNER (on github.com) or HOST/OWNER",
        )
    try:
        argv = config.cli_argv_template
        require(bool(argv), "cli_command", "must not be empty")
        require("{repo}" in config.cli_command, "cli_command", "must contain {repo}")
    except ValueError as error:
        problems.append(f"cli_command: cannot be split into arguments: {error}")
    try:
        require(not config.cli_version_command or bool(shlex.split(config.cli_version_command)),
                "cli_version_command", "must be empty (derived from cli_command) or a command")
    except ValueError as error:
        problems.append(f"cli_version_command: cannot be split into arguments: {error}")
    require(config.sandbox in SANDBOXES, "sandbox", f"must be one of {', '.join(SANDBOXES)} (or systemd-scope)")
    require(
        not (under_systemd and config.sandbox == "process" and not config.allow_unisolated),
        "sandbox",
        '"process" isolates nothing; under systemd use sandbox = "systemd-service", '
        "or set allow_unisolated = true to run jobs unisolated deliberately",
    )
    upstream = urlparse(config.claude_upstream)
    require(upstream.scheme in ("http", "https") and bool(upstream.netloc) and not upstream.username,
            "claude_upstream", f"must be an http(s) URL without credentials, got {config.claude_upstream!r}")
    require(0 <= config.claude_max_retries <= 10, "claude_max_retries", "must be from 0 to 10")
    require(config.claude_max_tokens >= 0, "claude_max_tokens", "must be 0 (no budget) or more")
    require(config.gateway_control_socket.startswith("/"), "gateway_control_socket", "must be an absolute path")
    require(config.sandbox == "process" or config.claude_credentials_file == JOB_CREDENTIALS,
            "claude_credentials_file", f"must be {JOB_CREDENTIALS} under sandbox = systemd-service, where the "
            "Claude gateway service reads the credential (credentials_file of its gateway.toml)")
    require(config.tasks_max >= 8, "tasks_max", "must be at least 8")
    require(config.disk_max > max(config.clone_max_bytes, MIN_DISK_BYTES), "disk_max",
            f"must be more than clone_max_bytes (the clone is on the job's disk) and {MIN_DISK_BYTES} bytes")
    require(config.log_format in ("json", "console"), "log_format", "must be json or console")
    for key in ("clone_max_bytes", "clone_max_files", "max_doc_bytes", "max_docs", "max_output_bytes"):
        require(getattr(config, key) > 0, key, "must be more than 0")
    require(config.max_doc_bytes <= MAX_DOC_CONTENT_BYTES, "max_doc_bytes",
            f"must be at most {MAX_DOC_CONTENT_BYTES} (what the queue accepts)")
    require(config.max_docs <= MAX_DOCS_PER_JOB, "max_docs",
            f"must be at most {MAX_DOCS_PER_JOB} (what the queue accepts)")
    require(1 <= config.host_failure_threshold <= 100, "host_failure_threshold", "must be from 1 to 100")
    require(0 < config.host_pause_initial <= config.host_pause_max, "host_pause_initial",
            "must be more than 0 seconds and at most host_pause_max")
    if config.metrics_address:
        host, _, port = config.metrics_address.rpartition(":")
        require(
            bool(host) and port.isdigit() and int(port) < 65536,
            "metrics_address",
            f"must be HOST:PORT (or empty to disable), got {config.metrics_address!r}",
        )
    for name in config.cli_env:
        require(name.isidentifier() or name.replace("_", "").isalnum(), "cli_env", f"bad variable name {name!r}")
    return problems


def instance_config_path(instance: str) -> Path:
    """The config of worker instance NAME (fondation-agent@NAME.service): NAME.toml beside agent.toml.

    The unnamed instance (fondation-agent.service, whose %i is empty) reads agent.toml itself.
    """
    if not instance:
        return DEFAULT_CONFIG_PATH
    if not _INSTANCE_NAME.fullmatch(instance):
        raise ConfigError([f"--instance: {instance!r} is not an instance name (letters, digits, _ . : -)"])
    return DEFAULT_CONFIG_PATH.with_name(f"{instance}.toml")


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Reads the file (if any), applies environment overrides, validates; raises ConfigError.

    `environ` also says whether systemd started this process (started_by_systemd), which refuses
    the process sandbox without allow_unisolated.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    notices: list[str] = []
    values: dict[str, Any] = {}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([f"{path}: not valid TOML: {error}"]) from error
        for key, raw in document.items():
            if key in OBSOLETE_KEYS:
                notices.append(f"{key}: {OBSOLETE_KEYS[key]}")
                continue
            if key not in _FIELDS:
                problems.append(f"{key}: unknown key")
                continue
            try:
                values[key] = _coerce(key, raw, from_env=False)
            except ValueError as error:
                problems.append(f"{key}: {error}")
    for key in _FIELDS:
        for env_name in _env_names(key):
            if env_name in environ:
                try:
                    values[key] = _coerce(key, environ[env_name], from_env=True)
                except ValueError as error:
                    problems.append(f"{key} (from ${env_name}): {error}")
                break
    values.setdefault("worker_id", socket.gethostname())
    if "sandbox" in values:
        values["sandbox"] = SANDBOX_ALIASES.get(values["sandbox"], values["sandbox"])
    if problems:
        raise ConfigError(problems)
    config = Config(**values, notices=tuple(notices))
    problems = _validate(config, under_systemd=started_by_systemd(environ))
    if problems:
        raise ConfigError(problems)
    return config
