"""The CLI contract (docs/cli-contract.md): how the CLI is invoked and how it reports progress."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fondation_agent.queue.rules import MAX_STEP

# Variables a job may inherit from the agent; everything else (the worker token above all,
# NOTIFY_SOCKET, the agent's own settings, its HOME: each runner gives the job a fresh one) stays behind.
INHERITED_VARIABLES = ("LANG", "LC_ALL", "TZ", "USER", "LOGNAME")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# The six steps of a full run, as the real CLI names them in the platform's UI.
# (The stand-in CLIs, separate programs, name them too.)
STEPS = ("Extracting abstractions", "Analyzing relationships", "Determining order",
         "Generating chapters", "Reviewing chapters", "Creating tutorials")
# The forms the CLI prints progress in (docs/cli-contract.md): the real CLI's non-TTY form
# `[FONDATION_STEP_N/M] text` (inside its JSON log line's `msg`), its TTY form `[N/M] Phase: text`,
# and the older `[PROGRESS] Step N/M: text` / `Step N/M: text`.
_PROGRESS_FORMS = (
    re.compile(r"^\s*\[FONDATION_STEP_(\d{1,4})/(\d{1,4})\]\s*(.*?)\s*$"),
    re.compile(r"^\s*\[(\d{1,4})/(\d{1,4})\]\s*[A-Za-z][\w -]{0,40}:\s*(.*?)\s*$"),
    re.compile(r"^\s*(?:\[PROGRESS\]\s*)?Step\s+(\d{1,4})\s*/\s*(\d{1,4})\s*:\s*(.*?)\s*$"),
)
MAX_PROGRESS_TEXT = 200
# The real CLI's output layout: its three YAML files, one per step (docs/cli-contract.md).
ABSTRACTIONS, RELATIONSHIPS, ORDER = "step1_abstractions.yaml", "step2_relationships.yaml", "step3_order.yaml"
# What came with the repository and must not reach the CLI: a shipped output directory could pass
# for results; Claude Code would load `.claude/` (settings, hooks that run shell commands, agents,
# commands) and `.mcp.json` (MCP servers it starts) as the project's own configuration.
SEED_OUTPUT_DIR = ".claude-tutorial-output"
SHIPPED_PATHS = (SEED_OUTPUT_DIR, ".claude", ".mcp.json")


def output_directories(output: Path, repo: Path) -> list[Path]:
    """Where the CLI's documents may be, in order: {output}, else the clone's SEED_OUTPUT_DIR (a CLI
    that ignores CLAUDE_OUTPUT_DIR and gets no --output-dir writes there)."""
    return [output, repo / SEED_OUTPUT_DIR]


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    text: str

    def describe(self) -> str:
        return f"Step {self.step}/{self.total}: {self.text}"


def parse_progress(line: str) -> Progress | None:
    """Progress in any of the CLI's forms; nonsense counts are not progress."""
    for form in _PROGRESS_FORMS:
        match = form.match(line)
        if match is not None:
            step, total = int(match[1]), int(match[2])
            if total == 0 or step == 0 or step > total or total > MAX_STEP:
                return None
            return Progress(step, total, match[3][:MAX_PROGRESS_TEXT])
    return None


def remove_shipped_files(repo: Path) -> list[str]:
    """Deletes SHIPPED_PATHS from the clone (links themselves, never what they point to)."""
    removed = []
    for name in SHIPPED_PATHS:
        path = repo / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(name)
    return removed


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
