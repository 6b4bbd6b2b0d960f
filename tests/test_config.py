"""Configuration (fondation_agent/config.py): defaults, TOML, environment overrides, validation, the worker token,
and `fondation-agent check-config` as a real process."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fondation_agent.cli import main as cli_main
from fondation_agent.config import DEFAULT_CONFIG_PATH, Config, ConfigError, instance_config_path, load_config

URL = "https://happy-animal-123.convex.cloud"
SCRIPT = Path(sys.executable).with_name("fondation-agent")


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path | None, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# ------------------------------------------------------------------------------------------ defaults and TOML


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'convex_url = "{URL}"\n'), environ={})
    assert config == Config(convex_url=URL, worker_id=socket.gethostname())
    assert (config.concurrency, config.poll_interval, config.lease_time, config.heartbeat_interval) == (1, 2.0, 60, 20)
    assert config.temp_dir == "/var/lib/fondation-agent/workspaces"
    assert (config.job_timeout, config.drain_timeout, config.kill_grace) == (3600, 300, 10)
    assert config.cli_command == (
        "node /opt/fondation/cli/current/dist/cli.bundled.mjs analyze {repo} --profile production")
    assert (config.sandbox, config.metrics_address, config.log_format) == ("process", "127.0.0.1:9810", "json")
    assert config.allowed_hosts == ("github.com",) and config.allow_local_repositories is False
    assert config.allow_unisolated is False
    assert (config.wake, config.safety_poll_interval, config.wake_jitter) == ("subscription", 300, 0.1)
    assert config.worker_token_file == ""
    assert config.lease_ms == 60_000


def test_no_file_at_all_is_fine_when_the_environment_has_the_url() -> None:
    assert load_config(None, {"CONVEX_URL": URL}).convex_url == URL


def test_toml_values(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
convex_url = "{URL}"
worker_id = "host-1"
worker_token_file = "/run/secrets/token"
concurrency = 4
poll_interval = 0.5
lease_time = 90          # an integer is fine for seconds
heartbeat_interval = 30
temp_dir = "/srv/workspaces"
job_timeout = 7200
allowed_hosts = ["github.com", "gitlab.example.com"]
allow_local_repositories = true
cli_command = "python3 /opt/cli.py {{repo}} --out={{output}}"
sandbox = "systemd-scope"
memory_max = "2G"
tasks_max = 128
metrics_address = ""
log_format = "console"

[cli_env]
NODE_OPTIONS = "--max-old-space-size=2048"
""")
    config = load_config(path, environ={})
    assert (config.worker_id, config.worker_token_file, config.concurrency) == ("host-1", "/run/secrets/token", 4)
    assert (config.poll_interval, config.lease_time, config.heartbeat_interval) == (0.5, 90.0, 30.0)
    assert isinstance(config.lease_time, float) and config.lease_ms == 90_000
    assert (config.temp_dir, config.job_timeout) == ("/srv/workspaces", 7200.0)
    assert config.allowed_hosts == ("github.com", "gitlab.example.com") and config.allow_local_repositories is True
    assert config.cli_argv_template == ["python3", "/opt/cli.py", "{repo}", "--out={output}"]
    # The mechanism's old name means the new runner.
    assert (config.sandbox, config.memory_max, config.tasks_max) == ("systemd-service", "2G", 128)
    assert (config.metrics_address, config.log_format) == ("", "console")
    assert config.cli_env == {"NODE_OPTIONS": "--max-old-space-size=2048"}


# ------------------------------------------------------------------------------------------ environment


SEED_ALIASES = [
    ("CONVEX_URL", "convex_url", "http://127.0.0.1:3210", "http://127.0.0.1:3210"),
    ("WORKER_ID", "worker_id", "host-7", "host-7"),
    ("POLL_INTERVAL", "poll_interval", "0.25", 0.25),
    ("LEASE_TIME", "lease_time", "120", 120.0),
    ("HEARTBEAT_INTERVAL", "heartbeat_interval", "9.5", 9.5),
    ("MAX_CONCURRENT_JOBS", "concurrency", "6", 6),
    ("TEMP_DIR", "temp_dir", "/srv/tmp", "/srv/tmp"),
    ("JOB_TIMEOUT", "job_timeout", "900", 900.0),
]


@pytest.mark.parametrize(("env", "key", "raw", "expected"), SEED_ALIASES, ids=[a[0] for a in SEED_ALIASES])
def test_the_seeds_environment_names_override_the_file(
    tmp_path: Path, env: str, key: str, raw: str, expected: Any
) -> None:
    path = write(tmp_path, f'convex_url = "{URL}"\nworker_id = "from-file"\nconcurrency = 2\n')
    config = load_config(path, {env: raw})
    assert getattr(config, key) == expected
    assert type(getattr(config, key)) is type(expected)


# A valid environment value for every key (and what it becomes), except cli_env, which is a table.
EVERY_KEY = {
    "convex_url": ("http://10.0.0.5:3210", "http://10.0.0.5:3210"),
    "worker_id": ("vps-3-a", "vps-3-a"),
    "worker_token_file": ("/run/token", "/run/token"),
    "concurrency": ("3", 3),
    "poll_interval": ("1.5", 1.5),
    "wake": ("poll", "poll"),
    "safety_poll_interval": ("120", 120.0),
    "wake_jitter": ("0.25", 0.25),
    "lease_time": ("45", 45.0),
    "heartbeat_interval": ("15", 15.0),
    "temp_dir": ("/srv/ws", "/srv/ws"),
    "job_timeout": ("60", 60.0),
    "drain_timeout": ("30", 30.0),
    "kill_grace": ("2.5", 2.5),
    "allowed_hosts": ("github.com, gitlab.com,", ("github.com", "gitlab.com")),
    "allow_local_repositories": ("yes", True),
    "clone_timeout": ("120", 120.0),
    "clone_max_bytes": ("1048576", 1048576),
    "clone_max_files": ("5000", 5000),
    "git_token_file": ("/run/git-token", "/run/git-token"),
    "git_token_owners": ("acme, gitlab.example.com/team", ("acme", "gitlab.example.com/team")),
    "cli_command": ("/usr/bin/cli {repo} --prompt={prompt}", "/usr/bin/cli {repo} --prompt={prompt}"),
    "cli_version_command": ("/usr/bin/cli version", "/usr/bin/cli version"),
    "sandbox": ("systemd-scope", "systemd-service"),
    "allow_unisolated": ("true", True),
    "memory_max": ("8G", "8G"),
    "cpu_quota": ("50%", "50%"),
    "tasks_max": ("64", 64),
    "disk_max": ("21474836480", 20 * 1024**3),
    "max_doc_bytes": ("1000", 1000),
    "max_docs": ("7", 7),
    "max_output_bytes": ("100000", 100000),
    "metrics_address": ("0.0.0.0:9811", "0.0.0.0:9811"),
    "log_format": ("console", "console"),
    "health_max_silence": ("120", 120.0),
    "host_failure_threshold": ("5", 5),
    "host_pause_initial": ("30", 30.0),
    "host_pause_max": ("600", 600.0),
    "convex_timeout": ("5", 5.0),
    "claude_credentials_file": ("/etc/claude.env", "/etc/claude.env"),
    "claude_upstream": ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    "claude_max_retries": ("0", 0),
    "claude_max_tokens": ("500000", 500000),
    "gateway_control_socket": ("/run/gw/control.sock", "/run/gw/control.sock"),
}


def test_every_key_is_covered_by_the_environment_test() -> None:
    assert set(EVERY_KEY) | {"cli_env", "notices"} == {f.name for f in dataclasses.fields(Config)}


@pytest.mark.parametrize("key", EVERY_KEY)
def test_every_key_can_be_set_as_fondation_agent_key(tmp_path: Path, key: str) -> None:
    raw, expected = EVERY_KEY[key]
    path = write(tmp_path, f'convex_url = "{URL}"\n')
    config = load_config(path, {f"FONDATION_AGENT_{key.upper()}": raw})
    assert getattr(config, key) == expected


def test_the_prefixed_name_wins_over_the_seed_name() -> None:
    config = load_config(None, {"CONVEX_URL": URL, "FONDATION_AGENT_CONVEX_URL": "http://127.0.0.1:1",
                                "MAX_CONCURRENT_JOBS": "5", "FONDATION_AGENT_CONCURRENCY": "2"})
    assert (config.convex_url, config.concurrency) == ("http://127.0.0.1:1", 2)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("ON", True), ("0", False),
                                               ("no", False), ("off", False)])
def test_booleans_from_the_environment(raw: str, expected: bool) -> None:
    config = load_config(None, {"CONVEX_URL": URL, "FONDATION_AGENT_ALLOW_LOCAL_REPOSITORIES": raw})
    assert config.allow_local_repositories is expected


def test_bad_environment_values_name_the_key_and_the_variable() -> None:
    assert problems(None, {"CONVEX_URL": URL, "MAX_CONCURRENT_JOBS": "lots", "POLL_INTERVAL": "soon",
                           "FONDATION_AGENT_ALLOW_LOCAL_REPOSITORIES": "maybe",
                           "FONDATION_AGENT_CLI_ENV": "A=1"}) == [
        "concurrency (from $MAX_CONCURRENT_JOBS): expected a whole number, got 'lots'",
        "poll_interval (from $POLL_INTERVAL): expected a number of seconds, got 'soon'",
        "allow_local_repositories (from $FONDATION_AGENT_ALLOW_LOCAL_REPOSITORIES): "
        "expected true or false, got 'maybe'",
        "cli_env (from $FONDATION_AGENT_CLI_ENV): "
        "expected a table of strings (set it in the file, not the environment)",
    ]


# ------------------------------------------------------------------------------------------ problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 'blue'", "colour: unknown key"),
        ("concurrency = 'many'", "concurrency: expected a whole number, got 'many'"),
        ("concurrency = 2.5", "concurrency: expected a whole number, got 2.5"),
        ("concurrency = true", "concurrency: expected a whole number, got True"),
        ("lease_time = 'long'", "lease_time: expected a number of seconds, got 'long'"),
        ("lease_time = false", "lease_time: expected a number of seconds, got False"),
        ("allow_local_repositories = 'yes'", "allow_local_repositories: expected true or false, got 'yes'"),
        ("allowed_hosts = 'github.com'", "allowed_hosts: expected a list of strings"),
        ("allowed_hosts = [1, 2]", "allowed_hosts: expected a list of strings"),
        ("worker_id = 7", "worker_id: expected a string, got 7"),
        ("cli_env = { A = 1 }", "cli_env: expected a table of strings (set it in the file, not the environment)"),
        ("heartbeat_interval = 31", "heartbeat_interval: must be from 0.1 s to half of lease_time (30 s)"),
        ("lease_time = 10\nheartbeat_interval = 6", "heartbeat_interval: must be from 0.1 s to half of lease_time (5 s)"),  # noqa: E501
        ("lease_time = 1\nheartbeat_interval = 0.2", "lease_time: must be from 2 to 3600 seconds"),
        ("concurrency = 0", "concurrency: must be from 1 to 64"),
        ("poll_interval = 0", "poll_interval: must be from 0.05 to 300 seconds"),
        ("wake = 'push'", "wake: must be one of subscription, poll"),
        ("safety_poll_interval = 0.5", "safety_poll_interval: must be from 1 to 3600 seconds"),
        ("wake_jitter = -1", "wake_jitter: must be from 0 to 10 seconds"),
        ("temp_dir = 'workspaces'", "temp_dir: must be an absolute path"),
        ("job_timeout = 0", "job_timeout: must be more than 0 seconds"),
        ("convex_timeout = -1", "convex_timeout: must be more than 0 seconds"),
        ("sandbox = 'docker'", "sandbox: must be one of process, systemd-service (or systemd-scope)"),
        ("log_format = 'xml'", "log_format: must be json or console"),
        ("cli_command = 'node cli.js'", "cli_command: must contain {repo}"),
        ("cli_command = 'node \"cli.js {repo}'", "cli_command: cannot be split into arguments"),
        ("metrics_address = '9810'", "metrics_address: must be HOST:PORT (or empty to disable), got '9810'"),
        ("allowed_hosts = []", "allowed_hosts: must name at least one host"),
        ("tasks_max = 4", "tasks_max: must be at least 8"),
        ("claude_upstream = 'api.anthropic.com'", "claude_upstream: must be an http(s) URL without credentials"),
        ("claude_upstream = 'https://u:p@gw'", "claude_upstream: must be an http(s) URL without credentials"),
        ("claude_max_retries = 11", "claude_max_retries: must be from 0 to 10"),
        ("claude_max_tokens = -1", "claude_max_tokens: must be 0 (no budget) or more"),
        ("gateway_control_socket = 'control.sock'", "gateway_control_socket: must be an absolute path"),
        ("sandbox = 'systemd-service'\nclaude_credentials_file = '/srv/k.env'",
         "claude_credentials_file: must be /etc/fondation-agent/job.env under sandbox = systemd-service"),
        ("disk_max = 1000", "disk_max: must be more than clone_max_bytes"),
        (f"disk_max = {1024**3}", "disk_max: must be more than clone_max_bytes"),
        ("git_token_owners = ['https://github.com/acme']", "git_token_owners: 'https://github.com/acme' must be OWNER"),
        ("max_docs = 0", "max_docs: must be more than 0"),
        ("max_docs = 1001", "max_docs: must be at most 1000 (what the queue accepts)"),
        ("max_doc_bytes = 2000000", "max_doc_bytes: must be at most 1000000 (what the queue accepts)"),
        ("host_failure_threshold = 0", "host_failure_threshold: must be from 1 to 100"),
        ("host_pause_initial = 3600", "host_pause_initial: must be more than 0 seconds and at most host_pause_max"),
        ("worker_id = ''", "worker_id: must be 1-200 characters"),
    ],
)
def test_one_clear_line_per_problem_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, f'convex_url = "{URL}"\n{text}\n'))
    assert len(found) == 1, found
    assert found[0].startswith(expected), found


@pytest.mark.parametrize(
    "url", ["", "convex.cloud", "ftp://example.com", "http://", "happy-animal-123.convex.cloud/api"]
)
def test_bad_urls(tmp_path: Path, url: str) -> None:
    assert problems(write(tmp_path, f'convex_url = "{url}"\n')) == [
        f"convex_url: must be an http(s) URL of a Convex deployment, got {url!r}"
    ]


def test_a_missing_url_is_a_problem_too() -> None:
    assert problems(None, {}) == ["convex_url: must be an http(s) URL of a Convex deployment, got ''"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    typed = problems(write(tmp_path, "colour = 1\nconcurrency = 'x'\nsandbox = 3\n"))
    assert [line.split(":")[0] for line in typed] == ["colour", "concurrency", "sandbox"]
    invalid = problems(write(tmp_path, "convex_url = 'nope'\ntemp_dir = 'rel'\nconcurrency = 99\n"))
    assert [line.split(":")[0] for line in invalid] == ["convex_url", "concurrency", "temp_dir"]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert problems(missing) == [f"{missing}: cannot read: No such file or directory"]
    broken = write(tmp_path, "convex_url = \n")
    [line] = problems(broken)
    assert line.startswith(f"{broken}: not valid TOML:")


@pytest.mark.parametrize("key", ["convex_timeout", "job_timeout"])
def test_infinite_durations_are_refused(tmp_path: Path, key: str) -> None:
    assert problems(write(tmp_path, f'convex_url = "{URL}"\n{key} = inf\n'))[0].startswith(f"{key}:")


# ------------------------------------------------------------------------------------------ process sandbox, systemd


UNISOLATED = ('sandbox: "process" isolates nothing; under systemd use sandbox = "systemd-service", '
              "or set allow_unisolated = true to run jobs unisolated deliberately")
UNDER_SYSTEMD = {"INVOCATION_ID": "5e7d1f0c2b9a4c3d8e6f7a1b2c3d4e5f"}


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ("", {}),  # a laptop, CI: process is the default
        ('sandbox = "process"', {}),
        ("allow_unisolated = true", UNDER_SYSTEMD),
        ("", {**UNDER_SYSTEMD, "FONDATION_AGENT_ALLOW_UNISOLATED": "1"}),
        ('sandbox = "systemd-service"', UNDER_SYSTEMD),
        ('sandbox = "systemd-scope"', UNDER_SYSTEMD),
    ],
)
def test_the_process_sandbox_runs_outside_systemd_or_when_allowed(tmp_path: Path, text: str, environ: dict) -> None:
    load_config(write(tmp_path, f'convex_url = "{URL}"\n{text}\n'), environ)


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ("", UNDER_SYSTEMD),  # an instance file that forgot the key
        ('sandbox = "process"', UNDER_SYSTEMD),
        ("allow_unisolated = false", UNDER_SYSTEMD),
        ('sandbox = "systemd-service"', {**UNDER_SYSTEMD, "FONDATION_AGENT_SANDBOX": "process"}),
    ],
)
def test_under_systemd_the_process_sandbox_needs_allow_unisolated(tmp_path: Path, text: str, environ: dict) -> None:
    assert problems(write(tmp_path, f'convex_url = "{URL}"\n{text}\n'), environ) == [UNISOLATED]


def test_run_under_systemd_refuses_the_process_sandbox_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INVOCATION_ID", UNDER_SYSTEMD["INVOCATION_ID"])
    # No token file: were the check missing, `run` would stop at the token rather than start an agent.
    path = write(tmp_path, f'convex_url = "{URL}"\nworker_token_file = "{tmp_path / "token"}"\n')
    assert cli_main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"fondation-agent: config: {UNISOLATED}\n"


# ------------------------------------------------------------------------------------------ the worker token


def test_worker_token_from_the_configured_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = write(tmp_path, "  s3cret-token \n", "token")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "worker-token").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load_config(None, {"CONVEX_URL": URL, "FONDATION_AGENT_WORKER_TOKEN_FILE": str(token_file)})
    assert config.worker_token() == "s3cret-token", "the configured file wins, whitespace stripped"


def test_worker_token_from_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "worker-token").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_config(None, {"CONVEX_URL": URL}).worker_token() == "from-credentials"


def test_a_missing_or_empty_token_file_names_worker_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(None, {"CONVEX_URL": URL})
    with pytest.raises(ConfigError) as missing:
        config.worker_token()
    assert missing.value.problems == [
        f"worker_token_file: cannot read {tmp_path / 'worker-token'}: No such file or directory"
    ]
    empty = write(tmp_path, "\n\n", "empty-token")
    with pytest.raises(ConfigError) as blank:
        load_config(None, {"CONVEX_URL": URL, "FONDATION_AGENT_WORKER_TOKEN_FILE": str(empty)}).worker_token()
    assert blank.value.problems == [f"worker_token_file: {empty} is empty"]


def test_without_credentials_the_token_is_read_from_etc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fondation_agent.config as config_module

    assert Path("/etc/fondation-agent/worker-token") == config_module.DEFAULT_TOKEN_PATH
    # This machine may hold a real token there: point the default elsewhere to test the lookup.
    monkeypatch.setattr(config_module, "DEFAULT_TOKEN_PATH", tmp_path / "etc-worker-token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(None, {"CONVEX_URL": URL})
    with pytest.raises(ConfigError, match=r"^worker_token_file: cannot read .*/etc-worker-token: "):
        config.worker_token()
    write(tmp_path, "from-etc\n", "etc-worker-token")
    assert config.worker_token() == "from-etc"


# ------------------------------------------------------------------------------------------ check-config


def check_config(path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "check-config", str(path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'convex_url = "{URL}"\nworker_id = "host-1"\nconcurrency = 2\n')
    done = check_config(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: ok (worker_id=host-1, concurrency=2, sandbox=process)"
    assert done.stderr == ""


def test_check_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, f'convex_url = "{URL}"\nlease_time = 10\nheartbeat_interval = 8\ntemp_dir = "tmp"\n')
    done = check_config(path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "fondation-agent: config: heartbeat_interval: must be from 0.1 s to half of lease_time (5 s); "
        "about a third is best",
        "fondation-agent: config: temp_dir: must be an absolute path",
    ]


def test_check_config_judges_the_file_alone(tmp_path: Path) -> None:
    path = write(tmp_path, 'worker_id = "host-1"\n')
    done = check_config(path, CONVEX_URL=URL, FONDATION_AGENT_CONVEX_URL=URL)
    assert done.returncode == 2, "the environment does not rescue an incomplete file"
    assert done.stderr.strip() == "fondation-agent: config: convex_url: must be an http(s) URL of a Convex " \
                                  "deployment, got ''"


def test_check_config_judges_the_file_even_when_systemd_runs_it(tmp_path: Path) -> None:
    path = write(tmp_path, f'convex_url = "{URL}"\nworker_id = "host-1"\n')
    done = check_config(path, **UNDER_SYSTEMD)
    assert done.returncode == 0, done.stderr


def test_check_config_of_a_missing_or_broken_file(tmp_path: Path) -> None:
    missing = check_config(tmp_path / "nope.toml")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"fondation-agent: config: {tmp_path / 'nope.toml'}: cannot read: " \
                                     "No such file or directory"
    broken = check_config(write(tmp_path, "[unclosed\n"))
    assert broken.returncode == 2
    assert len(broken.stderr.splitlines()) == 1 and "not valid TOML" in broken.stderr


def test_an_obsolete_key_of_a_kept_conffile_is_ignored_with_a_warning(tmp_path: Path) -> None:
    kept = f'convex_url = "{URL}"\nsandbox = "systemd-scope"\njob_user = "fondation-job"\n'  # 0.1.0's agent.toml
    config = load_config(write(tmp_path, kept), {})
    assert config.sandbox == "systemd-service"
    assert config.notices == ("job_user: ignored: jobs run as the pool of users fondation-job-<n>",)


def test_the_job_network_keys_of_the_nftables_rules_are_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f'convex_url = "{URL}"\njob_network_allow = ["10.1.0.0/16"]\njob_network_deny = ["x"]\n')
    assert cli_main(["check-config", str(path)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: {key}: ignored: jobs reach only the Claude gateway "
        '(docs/operations.md, "What a job can and cannot do")' for key in ("job_network_allow", "job_network_deny")]


def test_an_instance_name_picks_its_file_beside_agent_toml_and_the_empty_name_agent_toml_itself() -> None:
    assert instance_config_path("") == DEFAULT_CONFIG_PATH
    assert instance_config_path("2") == DEFAULT_CONFIG_PATH.with_name("2.toml")
    assert instance_config_path("eu-west.b") == DEFAULT_CONFIG_PATH.with_name("eu-west.b.toml")


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "x" * 65, "a b"])
def test_an_instance_name_that_could_leave_the_directory_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not an instance name"):
        instance_config_path(name)


def test_run_instance_without_its_file_exits_2_naming_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    """What `systemctl enable --now fondation-agent@NAME` without NAME.toml shows in the journal."""
    assert cli_main(["run", "--instance", "no-such-instance"]) == 2
    assert f"{DEFAULT_CONFIG_PATH.with_name('no-such-instance.toml')}: cannot read" in capsys.readouterr().err
