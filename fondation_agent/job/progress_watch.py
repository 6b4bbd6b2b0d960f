"""Progress read from the CLI's output directory while it runs, for CLIs that print nothing.

Each step of the real CLI leaves a mark: step1_abstractions.yaml, step2_relationships.yaml,
step3_order.yaml, then the chapters/, reviewed-chapters/ and tutorials/ directories filling up.
The newest mark tells the step in progress and, in steps 4-6, how many files are written of the
chapters step3_order.yaml lists. The directory belongs to the hostile job: it is only listed
through descriptors that refuse symlinks, and the one file read is bounded.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from fondation_agent.job.cli_contract import ABSTRACTIONS, ORDER, RELATIONSHIPS, STEPS, Progress
from fondation_agent.job.untrusted import (
    MAX_YAML_BYTES,
    UntrustedInput,
    list_directory,
    load_yaml,
    open_directory,
    read_regular_file,
)

# The step each directory's files belong to, and the word for their progress.
STEP_DIRECTORIES = (("tutorials", 6, "written"), ("reviewed-chapters", 5, "reviewed"), ("chapters", 4, "written"))
POLL_INTERVAL = 1.0


def _entries(dir_fd: int, what: str) -> dict[str, int]:
    """Names in a directory and their lstat modes (UntrustedInput past list_directory's cap)."""
    return {entry.name: entry.stat(follow_symlinks=False).st_mode for entry in list_directory(dir_fd, what)}


def _markdown_count(dir_fd: int, name: str) -> int:
    fd = open_directory(name, dir_fd)
    try:
        entries = _entries(fd, f"{name}/")
        return sum(1 for child, mode in entries.items() if child.endswith(".md") and stat.S_ISREG(mode))
    finally:
        os.close(fd)


class _OrderLength:
    """How many chapters step3_order.yaml lists, re-read only when the file changes."""

    def __init__(self) -> None:
        self._seen: tuple[int, int] | None = None
        self._length: int | None = None

    def __call__(self, dir_fd: int) -> int | None:
        info = os.stat(ORDER, dir_fd=dir_fd, follow_symlinks=False)
        if (info.st_size, info.st_mtime_ns) != self._seen:
            self._seen = (info.st_size, info.st_mtime_ns)
            try:
                data = load_yaml(read_regular_file(dir_fd, ORDER, MAX_YAML_BYTES).decode("utf-8", "replace"), ORDER)
            except (UntrustedInput, OSError):
                data = None
            order = data.get("order") if isinstance(data, dict) else None
            self._length = len(order) if isinstance(order, list) else None
        return self._length


def observe(directory: Path, order_length: Callable[[int], int | None]) -> Progress | None:
    """The step the output directory shows; None when it does not exist (yet)."""
    try:
        fd = open_directory(directory)
    except OSError:
        return None
    try:
        entries = _entries(fd, f"{directory.name}/")
        for name, step, verb in STEP_DIRECTORIES:
            if stat.S_ISDIR(entries.get(name, 0)):
                count = _markdown_count(fd, name)
                total = order_length(fd) if stat.S_ISREG(entries.get(ORDER, 0)) else None
                written = f"{count} of {total}" if total else str(count)
                return Progress(step, len(STEPS), f"{STEPS[step - 1]} ({written} {verb})")
        for name, step in ((ORDER, 4), (RELATIONSHIPS, 3), (ABSTRACTIONS, 2)):
            if stat.S_ISREG(entries.get(name, 0)):
                return Progress(step, len(STEPS), STEPS[step - 1])
        return Progress(1, len(STEPS), STEPS[0])
    # The job removed or replaced something while we looked (look again later), or a directory is too
    # full to list (the results will say so).
    except (OSError, UntrustedInput):
        return None
    finally:
        os.close(fd)


class OutputWatcher(threading.Thread):
    """Reports what the first existing output directory shows, each time it changes."""

    def __init__(self, directories: list[Path], report: Callable[[Progress], None], name: str):
        super().__init__(daemon=True, name=name)
        self.directories = directories
        self.report = report
        self._stop_event = threading.Event()
        self._order_length = _OrderLength()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        last = None
        while True:
            seen = [observe(directory, self._order_length) for directory in self.directories]
            shown = next((progress for progress in seen if progress is not None and progress.step > 1), None)
            shown = shown or next((progress for progress in seen if progress is not None), None)
            if shown is not None and shown != last:
                self.report(shown)
                last = shown
            if self._stop_event.wait(POLL_INTERVAL):
                return
