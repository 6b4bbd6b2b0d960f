"""The CLI contract: argument lists, the job environment, progress lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fondation_agent.job.cli_contract import cli_argv, cli_environment, parse_progress, remove_shipped_files


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[FONDATION_STEP_2/6] Analyzing relationships between components",
         (2, 6, "Analyzing relationships between components")),
        ("[4/6] Generate: Generating chapter content", (4, 6, "Generating chapter content")),  # the TTY form
        ("[PROGRESS] Step 2/6: Analyzing relationships", (2, 6, "Analyzing relationships")),
        ("Step 6/6: Creating tutorials  ", (6, 6, "Creating tutorials")),
        ("  [PROGRESS]Step 1 / 6 : Extracting", (1, 6, "Extracting")),
        ("Step 7/6: impossible", None),
        ("Step 1/0: nonsense", None),
        ("[FONDATION_STEP_0/6] nothing yet", None),
        ("[FONDATION_STEP_2/2000] more steps than the queue takes", None),
        ("[2/6] no phase", None),
        ("found Step 1/6: inside a sentence", None),
        ("plain log line", None),
    ],
)
def test_progress_lines(line, expected):
    progress = parse_progress(line)
    assert (None if progress is None else (progress.step, progress.total, progress.text)) == expected


def test_placeholders_fill_arguments_without_a_shell():
    argv = cli_argv(["node", "cli.mjs", "analyze", "{repo}", "--prompt={prompt}", "--id", "{job_id}"],
                    repo=Path("/w/r"), output=Path("/w/o"), prompt="a; rm -rf / $(x)", job_id="j1")
    assert argv == ["node", "cli.mjs", "analyze", "/w/r", "--prompt=a; rm -rf / $(x)", "--id", "j1"]


def test_the_job_environment_is_an_allowlist():
    inherited = {"HOME": "/home/a", "PATH": "/evil", "NOTIFY_SOCKET": "/run/systemd/notify",
                 "FONDATION_AGENT_WORKER_TOKEN_FILE": "/etc/t", "CONVEX_URL": "http://x", "LANG": "en_US.UTF-8"}
    env = cli_environment(output=Path("/w/o"), job_id="j1", extra={"NODE_OPTIONS": "--max-old-space-size=512"},
                          inherited=inherited)
    assert env == {
        "LANG": "en_US.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin",
        "NODE_OPTIONS": "--max-old-space-size=512", "CLAUDE_OUTPUT_DIR": "/w/o", "FONDATION_JOB_ID": "j1",
    }


def test_what_claude_code_would_load_and_a_shipped_output_are_removed(tmp_path):
    (tmp_path / ".claude" / "hooks").mkdir(parents=True)
    (tmp_path / ".claude" / "settings.json").write_text('{"hooks": {"PreToolUse": []}}')
    (tmp_path / ".mcp.json").write_text("{}")
    (tmp_path / ".claude-tutorial-output").symlink_to("/etc")
    (tmp_path / "CLAUDE.md").write_text("project notes stay")
    assert remove_shipped_files(tmp_path) == [".claude-tutorial-output", ".claude", ".mcp.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CLAUDE.md"]
    assert Path("/etc/passwd").exists(), "a link is removed, never what it points to"
    assert remove_shipped_files(tmp_path) == []
