"""When to claim next: the one object the worker loop asks, and tells what each claim found.

Polling (wake = poll, or while the subscription is not up): every poll_interval after a claim,
backing off while Convex is unreachable. With the subscription up: the moment its value says a job
is due (plus the herd delay, so that a fleet of idle agents does not all claim the same job:
wake.HerdDelay), else a slow safety poll. A value an empty claim was already made for is not claimed
for again, but for a retry after poll_interval when it said "due now" (the clocks of agent and
Convex may differ). Main thread only; times are time.monotonic() unless named _ms (Unix, Convex's).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol

from fondation_agent.queue.wake import UP, Due, HerdDelay

MAX_UNREACHABLE_BACKOFF = 30.0


class Pacing(Protocol):
    """The settings the schedule reads (a Config has them all); a reload hands in new ones."""

    poll_interval: float
    safety_poll_interval: float
    wake_jitter: float


@dataclass(frozen=True)
class Attempt:
    """One claim in flight: when it started and what the subscription said then."""

    started_at: float
    due: Due | None
    said_due: bool


class ClaimSchedule:
    def __init__(self, pacing: Pacing, wake=None):
        self.pacing = pacing
        self.wake = wake  # None when polling; else anything with current() -> Due
        self.next_poll = 0.0
        self.unreachable_streak = 0
        self.last_claim_at = 0.0
        self.safety_poll_factor = 1.0
        self.tried_version = -1  # the subscription's value the last empty claim was made for
        self.retry_at = float("inf")
        self.herd = HerdDelay(pacing.wake_jitter)
        self.jitter = (-1, 0.0)  # (version, herd delay) drawn once per value

    def _due(self) -> Due | None:
        return None if self.wake is None else self.wake.current()

    def next_at(self) -> float:
        """When the next claim is due (monotonic time)."""
        due = self._due()
        if due is None or due.state != UP:
            return self.next_poll
        at = self.last_claim_at + self.pacing.safety_poll_interval * self.safety_poll_factor
        if due.version == self.tried_version:
            return min(at, self.retry_at)
        if due.at_ms is None:
            return at
        if self.jitter[0] != due.version:
            self.jitter = (due.version, self.herd.draw(self.pacing.wake_jitter))
        return min(at, time.monotonic() + due.at_ms / 1000 - time.time() + self.jitter[1])

    def claiming(self) -> Attempt:
        """A claim starts now."""
        due = self._due()
        attempt = Attempt(time.monotonic(), due, due is not None and due.says_due(time.time() * 1000))
        self.last_claim_at = attempt.started_at
        self.safety_poll_factor = random.uniform(0.8, 1.2)  # noqa: S311
        return attempt

    def failed(self, attempt: Attempt) -> int:
        """The claim did not reach Convex or was refused: back off. Returns the failures in a row."""
        self.unreachable_streak += 1
        delay = min(MAX_UNREACHABLE_BACKOFF, self.pacing.poll_interval * 2 ** min(self.unreachable_streak, 10))
        self.next_poll = time.monotonic() + random.uniform(delay / 2, delay)  # noqa: S311
        self._used_up(attempt.due, self.next_poll)
        return self.unreachable_streak

    def answered(self, attempt: Attempt, found_job: bool) -> int:
        """Convex answered the claim. Returns how many failures in a row this answer ends (0: none)."""
        recovered, self.unreachable_streak = self.unreachable_streak, 0
        retry_at = attempt.started_at + self.pacing.poll_interval * random.uniform(0.8, 1.2)  # noqa: S311
        # The next value (the claim itself changes it) says what to do. But for a retry: after a job
        # (another may have come in the same ms: an unchanged value), or after nothing was found for
        # a job said to be due (the clocks may differ).
        self._used_up(attempt.due, retry_at if found_job or attempt.said_due else float("inf"))
        if not found_job:
            self.next_poll = retry_at
        if attempt.said_due:
            if found_job:
                self.herd.won(self.pacing.wake_jitter)
            else:
                self.herd.lost(self.pacing.wake_jitter)
        return recovered

    def _used_up(self, due: Due | None, retry_at: float) -> None:
        """A claim was made for this value of the subscription: claim again only when it changes, or at retry_at."""
        if due is not None and due.state == UP:
            self.tried_version, self.retry_at = due.version, retry_at
