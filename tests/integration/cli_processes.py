"""Helpers for tests that watch real agents' CLI processes and workspaces."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import eventually


def cli_env(tmp_path: Path, name: str = "agent", **extra: str) -> dict[str, str]:
    """The agent's cli_env: its own fake-CLI state dir (as agent.Agent makes it) plus a tag."""
    return {"FAKE_CLI_STATE": str(tmp_path / name / "cli-state"), "FAKE_CLI_TAG": name, **extra}


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an orphan's zombie may wait long for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def cli_pids(agent, job_id: str) -> list[int]:
    """The pids a `pid-file` fake CLI wrote for a job: its own, then its children's (ignore-term)."""
    pids = []
    for suffix in (".pid", ".children"):
        path = agent.state / f"{job_id}{suffix}"
        if path.exists():
            pids += [int(line) for line in path.read_text().split()]
    return pids


def cli_printed(agent, job_id: str) -> None:
    """Waits until the agent has relayed a line of the job's CLI: the output directory shows step 1
    before the CLI prints anything, and a CLI that prints after its agent died dies of EPIPE."""
    eventually(lambda: any(e.get("job_id") == job_id and e.get("stream") == "stdout" for e in agent.log_events()))


def job_processes(tmp_path: Path) -> list[int]:
    """Live processes whose command line names a workspace under this test's directory (fake CLIs, children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp_path) in cmdline and "/workspaces/" in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def workspaces(agent) -> list[str]:
    root = Path(agent.settings["temp_dir"])
    # Dot-entries are the agent's bookkeeping (process-group records), not workspaces.
    return sorted(e.name for e in root.iterdir() if not e.name.startswith(".")) if root.exists() else []
