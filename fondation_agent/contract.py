"""The CLI contract (docs/cli-contract.md): how the CLI is invoked and how it reports progress."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Variables a job may inherit from the agent; everything else (the worker token above all,
# NOTIFY_SOCKET, the agent's own settings) stays behind.
INHERITED_VARIABLES = ("HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

_PROGRESS = re.compile(r"^\s*(?:\[PROGRESS\]\s*)?Step\s+(\d{1,4})\s*/\s*(\d{1,4})\s*:\s*(.*?)\s*$")


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    text: str

    def describe(self) -> str:
        return f"Step {self.step}/{self.total}: {self.text}"


def parse_progress(line: str) -> Progress | None:
    """`[PROGRESS] Step N/M: text` or `Step N/M: text`; nonsense counts are not progress."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    step, total = int(match[1]), int(match[2])
    if total == 0 or step > total:
        return None
    return Progress(step, total, match[3][:200])


def cli_argv(template: list[str], *, repo: Path, output: Path, prompt: str, job_id: str) -> list[str]:
    """Fills the placeholders in each argument; the result is an argument list, never a shell line."""
    values = {"{repo}": str(repo), "{output}": str(output), "{prompt}": prompt, "{job_id}": job_id}
    argv = []
    for argument in template:
        for placeholder, value in values.items():
            argument = argument.replace(placeholder, value)
        argv.append(argument)
    return argv


def cli_environment(
    *, output: Path, job_id: str, extra: Mapping[str, str], inherited: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The job's environment: an allowlist, never the agent's whole environment."""
    inherited = os.environ if inherited is None else inherited
    environment = {name: inherited[name] for name in INHERITED_VARIABLES if name in inherited}
    environment.setdefault("LANG", "C.UTF-8")
    environment["PATH"] = SAFE_PATH
    environment.update(extra)
    environment["CLAUDE_OUTPUT_DIR"] = str(output)
    environment["FONDATION_JOB_ID"] = job_id
    return environment
