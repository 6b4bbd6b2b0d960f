"""Per-job workspaces under temp_dir: `<jobId>-<attempt>/{repo,output,home,tmp}`, always removed afterwards.

Where the sandbox gives jobs a disk of their own (systemd-service: disk_max), the workspace is that
file system, mounted on `<jobId>-<attempt>` before anything is written into it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fondation_agent.sandbox.runner import Runner

OWNER_FILE = ".fondation-owner"
# Less than this left on a job's own file system after it failed: the job filled it.
DISK_FULL_MARGIN = 1024 * 1024
_JOB_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def is_safe_job_id(job_id: str) -> bool:
    """Job ids become path and unit names: only plain alphanumerics (as Convex makes them)."""
    return bool(_JOB_ID.fullmatch(job_id))


def _force_remove(path: Path) -> None:
    """Removes a tree even where the CLI made directories read-only."""

    def make_writable_and_retry(function, failed_path, _):
        parent = os.path.dirname(failed_path)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(failed_path) and not os.path.islink(failed_path):
            os.chmod(failed_path, stat.S_IRWXU)
        function(failed_path)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)  # onexc from Python 3.12 on


class Workspace:
    def __init__(self, temp_dir: Path, job_id: str, attempt: int, *, runner: Runner | None = None,
                 disk_max: int = 0):
        if not is_safe_job_id(job_id):
            raise ValueError(f"job id {job_id!r} is not a plain identifier")
        self.root = temp_dir / f"{job_id}-{attempt}"
        self.repo = self.root / "repo"
        self.output = self.root / "output"
        self.runner, self.disk_max = runner, disk_max
        self.own_disk = False

    def create(self, worker_id: str) -> Workspace:
        """Raises runner.DiskUnavailable when the sandbox cannot give the job its disk."""
        _force_remove(self.root)  # left by a crashed run of the same attempt
        self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        # 0711: a job user (sandbox = systemd-service) passes through to repo/, output/ and home/, which
        # the launcher gives it; the owner marker beside them stays the agent's.
        self.root.mkdir(mode=0o711)
        os.chmod(self.root, 0o711)  # noqa: S103 (traverse only)
        self.own_disk = self.runner is not None and self.runner.give_disk(self.root, self.disk_max)
        (self.root / OWNER_FILE).write_text(worker_id + "\n", encoding="utf-8")
        self.output.mkdir(mode=0o700)
        return self

    def disk_full(self) -> bool:
        """The job filled its own disk (never true without one: the host's disk is not the job's)."""
        if not self.own_disk:
            return False
        usage = os.statvfs(self.root)
        return usage.f_bavail * usage.f_frsize < DISK_FULL_MARGIN

    def remove(self) -> None:
        if self.own_disk and not self.runner.release_disk(self.root):
            return  # still mounted: the launcher's leftovers clean-up releases it at the next start
        _force_remove(self.root)


def fresh_home_and_tmp(root: Path) -> tuple[Path, Path]:
    """The job's own HOME and /tmp, in its workspace `root` (on its own disk where it has one) and
    removed with it: nothing one job leaves there (Claude Code's ~/.claude.json, its transcripts,
    settings and hooks under ~/.claude/, its /tmp/claude-<uid>/) reaches the next."""
    home, tmp = root / "home", root / "tmp"
    for fresh in (home, tmp):
        fresh.mkdir(mode=0o700, exist_ok=True)
    return home, tmp


def remove_leftover_workspaces(temp_dir: Path, worker_id: str) -> list[str]:
    """Removes workspaces an earlier run of this worker left (crash, kill -9); others' are not touched."""
    removed = []
    if not temp_dir.is_dir():
        return removed
    for entry in temp_dir.iterdir():
        owner = entry / OWNER_FILE
        try:
            is_ours = not entry.is_symlink() and owner.read_text(encoding="utf-8").strip() == worker_id
        except OSError:
            is_ours = False
        if is_ours:
            try:
                _force_remove(entry)
            except OSError:  # files of a job user (systemd-service: removable after the launcher's hand-back)
                continue
            removed.append(entry.name)
    return removed
