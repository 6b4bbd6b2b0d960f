"""The CLI's recent lines for the platform's live logs: the same cleaned text the journal gets, kept
until the next heartbeat carries them (worker:heartbeat's `logs`), never a call per line.

Bounded like the component's tail of a job (rules.json: maxLogLines, maxLogBytes,
maxLogLineLength): a CLI that floods its output costs the heartbeat no more than that, the oldest
unsent lines giving way.
"""

from __future__ import annotations

import threading
from collections import deque

from fondation_agent.queue.rules import MAX_LOG_BYTES, MAX_LOG_LINE_LENGTH, MAX_LOG_LINES, bounded

LogLine = dict[str, str]  # {"level": …, "text": …}, as worker:heartbeat takes it


def _size(line: LogLine) -> int:
    return len(line["text"].encode("utf-8"))


class LogTail:
    """Lines not yet sent, oldest first; thread-safe (the relay adds, the lease keeper takes)."""

    def __init__(self, max_lines: int = MAX_LOG_LINES, max_bytes: int = MAX_LOG_BYTES):
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._lines: deque[LogLine] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, level: str, text: str) -> None:
        line = {"level": level, "text": bounded(text, MAX_LOG_LINE_LENGTH)}
        with self._lock:
            self._lines.append(line)
            self._bytes += _size(line)
            while len(self._lines) > self._max_lines or self._bytes > self._max_bytes:
                self._bytes -= _size(self._lines.popleft())

    def take(self) -> list[LogLine]:
        """The unsent lines, which are then no longer kept."""
        with self._lock:
            taken, self._lines, self._bytes = list(self._lines), deque(), 0
            return taken

    def put_back(self, lines: list[LogLine]) -> None:
        """Lines a heartbeat failed to send, before those added since (the bounds still hold)."""
        with self._lock:
            for line in reversed(lines):
                if len(self._lines) >= self._max_lines or self._bytes + _size(line) > self._max_bytes:
                    return  # older than everything kept: these are the ones that give way
                self._lines.appendleft(line)
                self._bytes += _size(line)
