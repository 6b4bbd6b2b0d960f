"""A broken host stops eating jobs: after `threshold` host failures in a row, claiming pauses; a
refused Claude credential pauses it at the first.

Host failures (failures.py: Claude authentication or billing, a CLI that cannot start, a full
disk) are released back to the queue uncounted; without this pause one host with an expired
Claude login would take and hand back every job in a tight loop. A released job is due at once, so
a host that claimed again right away would take it back, three times, and fail it (Convex fails a
job at its third host release): a refused credential (claude_auth, failures.PAUSE_AT_ONCE) is no
fluke a retry could pass, so it pauses claiming at once and the job goes to another host. The pause lasts `initial`
seconds, doubling at each pause that follows without a job ending normally in between, up to
`maximum`; SIGHUP (the operator fixed something) ends it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class HostPause:
    def __init__(self, threshold: int, initial: float, maximum: float, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.configure(threshold, initial, maximum)
        self._streak = 0
        self._pauses = 0  # pauses since a job last ended normally: the backoff's exponent
        self._until = 0.0
        self._reason = ""

    def configure(self, threshold: int, initial: float, maximum: float) -> None:
        """New settings (a reload); a running pause keeps its end."""
        with self._lock:
            self.threshold, self.initial, self.maximum = threshold, initial, maximum

    def host_failure(self, kind: str, message: str, *, at_once: bool = False) -> float | None:
        """Records one; returns the pause in seconds if this one starts a pause (`at_once`: whatever
        the threshold says)."""
        with self._lock:
            self._streak += 1
            failures = "host failure" if self._streak == 1 else "host failures"
            self._reason = f"{self._streak} {failures} in a row, the last {kind}: {message}"
            if self._streak < self.threshold and not at_once:
                return None
            seconds = min(self.maximum, self.initial * 2**self._pauses)
            self._pauses += 1
            self._until = self._clock() + seconds
            return seconds

    def job_ended_normally(self) -> None:
        """The host ran a job to a verdict about the job itself: it works."""
        with self._lock:
            self._streak = self._pauses = 0
            self._until = 0.0

    def resume(self) -> bool:
        """Ends a pause now (SIGHUP); the next host failure pauses again. True if one was running."""
        with self._lock:
            if self._clock() >= self._until:
                return False
            self._until = 0.0
            self._pauses = 0
            self._streak = max(0, self.threshold - 1)
            return True

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def describe(self) -> str:
        """`paused claiming until 15:42:07 UTC (…)`, or "" when not paused."""
        with self._lock:  # once: the pause and its reason as one thread saw them together
            remaining = self._until - self._clock()
            if remaining <= 0:
                return ""
            until = time.strftime("%H:%M:%S UTC", time.gmtime(time.time() + remaining))
            return f"paused claiming until {until} ({self._reason})"

    @property
    def reason(self) -> str:
        with self._lock:
            return self._reason
