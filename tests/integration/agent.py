"""Run `fondation-agent run` as a real subprocess for tests: config file, logs, signals, /health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import tomli_w

from tests.helpers import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_CLI = REPO_ROOT / "tests" / "fixtures" / "fake_cli.py"


class Agent:
    """One agent process. `settings` become its TOML config; `start()` waits for /health to answer."""

    def __init__(self, directory: Path, backend_url: str, token: str, name: str = "agent", **settings: Any):
        self.directory = directory / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.metrics_port = free_port()
        token_file = self.directory / "worker-token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        claude_file = self.directory / "claude.env"  # tests of the real Claude Code set their own
        claude_file.write_text("ANTHROPIC_API_KEY=test-claude-key\n")
        claude_file.chmod(0o600)
        self.state = self.directory / "cli-state"
        self.state.mkdir(exist_ok=True)
        self.settings = {
            "convex_url": backend_url,
            "worker_id": name,
            "worker_token_file": str(token_file),
            "claude_credentials_file": str(claude_file),
            "temp_dir": str(self.directory / "workspaces"),
            "poll_interval": 0.2,
            "lease_time": 6.0,
            "heartbeat_interval": 1.0,
            "drain_timeout": 30.0,
            "kill_grace": 1.0,
            "job_timeout": 120.0,
            "allow_local_repositories": True,
            # These agents run jobs unisolated on purpose (the process sandbox), also when the test
            # runner itself runs under systemd (a CI service) and they inherit its INVOCATION_ID.
            "allow_unisolated": True,
            "cli_command": f"{sys.executable} {FAKE_CLI} {{repo}} {{output}} {{prompt}}",
            "cli_env": {"FAKE_CLI_STATE": str(self.state)},
            "metrics_address": f"127.0.0.1:{self.metrics_port}",
            "health_max_silence": 5.0,
            **settings,
        }
        self.config_path = self.directory / "agent.toml"
        self.write_config()
        self.log_path = self.directory / "agent.log"
        self.proc: subprocess.Popen | None = None

    def write_config(self, **changes: Any) -> None:
        self.settings.update(changes)
        self.config_path.write_text(tomli_w.dumps(self.settings))

    def start(self, env: dict[str, str] | None = None) -> Agent:
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("CONVEX", "FONDATION"))}
        environment.update(env or {})
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fondation_agent.cli", "run", "--config", str(self.config_path)],
                cwd=REPO_ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                requests.get(self.url("/health"), timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"agent not serving /health after 30 s:\n{self.log_text()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def health(self) -> tuple[int, dict]:
        response = requests.get(self.url("/health"), timeout=5)
        return response.status_code, response.json()

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample from /metrics (0 if absent)."""
        text = requests.get(self.url("/metrics"), timeout=5).text
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # a second one: release now
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events
