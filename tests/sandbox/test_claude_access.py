"""Claude Code's settings for jobs, their way to Claude (the gateway and a token of the attempt's), and
the one place of the Claude credential: the gateway (claude_access.py, sandbox/gateway/credentials.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fondation_agent.cli import main as cli_main
from fondation_agent.config import load_config
from fondation_agent.sandbox.claude_access import ClaudeAccess
from fondation_agent.sandbox.gateway import CONTROL_SOCKET
from fondation_agent.sandbox.gateway.client import ControlClient, InProcessGateway
from fondation_agent.sandbox.gateway.credentials import CredentialsError, read_credentials

URL = "http://127.0.0.1:3210"


def access_with(tmp_path: Path, credentials: str | None, **keys: str) -> ClaudeAccess:
    path = tmp_path / "job.env"
    if credentials is not None:
        path.write_text(credentials)
    environ = {"CONVEX_URL": URL, "FONDATION_AGENT_CLAUDE_CREDENTIALS_FILE": str(path),
               **{f"FONDATION_AGENT_{k.upper()}": v for k, v in keys.items()}}
    config = load_config(None, environ)
    return ClaudeAccess.for_agent(sandbox=config.sandbox, credentials_file=config.claude_credentials_file,
                                  upstream=config.claude_upstream, control_socket=config.gateway_control_socket,
                                  max_retries=config.claude_max_retries, max_tokens=config.claude_max_tokens)


def test_under_process_every_job_gets_the_in_process_gateway_and_a_token_never_the_credential(tmp_path):
    access = access_with(tmp_path, "# the host's key\nexport ANTHROPIC_API_KEY='sk-ant-1'\nOTHER=x\n",
                         claude_upstream="http://127.0.0.1:9", claude_max_retries="1", claude_max_tokens="1000")
    try:
        assert isinstance(access.gateway, InProcessGateway) and access.max_tokens == 1000
        registration = access.register("job1", 1, 60)
        environment = access.job_environment(registration)
        assert environment == {
            "ANTHROPIC_BASE_URL": access.gateway.url,
            "ANTHROPIC_API_KEY": registration.token,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",
            "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
        }
        assert environment["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
        assert "sk-ant-1" not in str(environment)
        assert access.end(registration).usage.requests == 0
    finally:
        access.close()


def test_an_oauth_token_is_a_credential_too(tmp_path):
    (tmp_path / "env").write_text('CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-x"\n')
    assert read_credentials(tmp_path / "env") == {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-x"}


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read {path}: No such file or directory"),
    (b"\xff\xfe", "cannot read {path}: not UTF-8 text"),
    (b"ANTHROPIC_API_KEY=\nANTHROPIC_BASE_URL=http://x\n",
     "{path} holds neither ANTHROPIC_API_KEY= nor CLAUDE_CODE_OAUTH_TOKEN="),
])
def test_a_credentials_file_that_gives_no_credential_is_one_line_naming_the_key(tmp_path, content, problem):
    path = tmp_path / "job.env"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CredentialsError) as caught:
        read_credentials(path)
    assert str(caught.value) == f"claude_credentials_file: {problem.format(path=path)}"


def test_run_stops_at_start_with_exit_2_when_the_credential_is_missing(tmp_path, capsys):
    (tmp_path / "token").write_text("t\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'convex_url = "{URL}"\nworker_token_file = "{tmp_path / "token"}"\n'
                      f'claude_credentials_file = "{tmp_path / "none.env"}"\n')
    assert cli_main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"fondation-agent: config: claude_credentials_file: cannot read "
                                       f"{tmp_path / 'none.env'}: No such file or directory\n")


def test_under_systemd_service_the_agent_never_reads_the_credential_and_talks_to_the_gateway_service(tmp_path):
    access = access_with(tmp_path, None, sandbox="systemd-service",
                         claude_credentials_file="/etc/fondation-agent/job.env")
    assert isinstance(access.gateway, ControlClient) and access.gateway.socket_path == CONTROL_SOCKET
    assert access.gateway.url == "http://127.0.0.1:8790"


def test_without_a_gateway_a_job_gets_claude_codes_settings_and_no_way_to_claude():
    access = ClaudeAccess(max_retries=2)
    assert access.register("job1", 1, 60) is None
    environment = access.job_environment(None)
    assert "ANTHROPIC_BASE_URL" not in environment and "ANTHROPIC_API_KEY" not in environment
