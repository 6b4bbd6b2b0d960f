"""Waking on change: a Convex subscription to `worker:nextDue`, so that an idle agent claims the
moment a job is due instead of at its next poll; and one to `worker:queueDepth` (the queue's
counters), so that the queue-depth metrics cost a call only when the queue changes, not every poll.

The subscription lives in a thread of its own running an asyncio loop: the `convex` package's
blocking calls (`next(subscription)`, `query()`, `mutation()`) hold the GIL while they wait, which
would stop every other thread of the agent (heartbeats, metrics); `async for` releases it. The
client reconnects by itself, forever, and does not say when its socket is down: the worker tells
this module when its own HTTP calls find Convex unreachable, and the subscription counts as down
from then until it delivers again (a reconnect delivers the current value).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from convex import ConvexClient

CONNECTING, UP, DOWN = "connecting", "up", "down"
STATES = (CONNECTING, UP, DOWN)
# A refused subscription (a wrong worker token, an old deployment without worker:nextDue) is retried
# this much later: the agent polls meanwhile, and the log is not flooded.
RETRY_AFTER_ERROR = 30.0
# The widest the herd delay grows (seconds): enough to spread a few dozen idle agents.
MAX_HERD_SPREAD = 2.0


@dataclass(frozen=True)
class Due:
    """What the subscription last said. `version` grows with every value; `at_ms` is the Unix time
    (ms, Convex's clock) at which a claim would find a job, or None when nothing is waiting."""

    state: str
    version: int
    at_ms: float | None

    def says_due(self, now_ms: float) -> bool:
        return self.state == UP and self.at_ms is not None and self.at_ms <= now_ms


def due_at_ms(value: dict) -> float | None:
    # A stalled job comes back as a pending one (its lease's reaper queues it again).
    return value.get("pendingAvailableAt")


class WakeSubscription:
    def __init__(self, convex_url: str, worker_token: str, on_change: Callable[[], None], log, metrics,
                 on_depth: Callable[[dict], None] | None = None):
        self._url = convex_url
        self._token = worker_token  # only ever an argument of the subscription: never logged
        self._on_change = on_change
        self._on_depth = on_depth
        self._depth_delivered = False
        self._log = log
        self._metrics = metrics
        self._lock = threading.Lock()
        self._due = Due(CONNECTING, 0, None)
        self._thread = threading.Thread(target=self._run, name="wake-subscription", daemon=True)
        self._set_state_gauge(CONNECTING)

    def start(self) -> WakeSubscription:
        self._thread.start()
        return self

    def current(self) -> Due:
        with self._lock:
            return self._due

    def depth_live(self) -> bool:
        """Whether the queue's depth comes from the subscription (delivered, and the socket is up)."""
        with self._lock:
            return self._depth_delivered and self._due.state == UP

    def convex_unreachable(self) -> None:
        """The worker's HTTP calls cannot reach Convex: take the socket as down too."""
        if self._set(DOWN):
            self._log.warning("wake subscription down: polling every poll_interval until it is back")

    # ---- the subscription's thread ----------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        client = ConvexClient(self._url)
        followers = [self._follow_due(client)]
        if self._on_depth is not None:
            followers.append(self._follow_depth(client))
        await asyncio.gather(*followers)

    async def _follow_due(self, client: ConvexClient) -> None:
        while True:
            try:
                async for value in client.subscribe("worker:nextDue", {"workerToken": self._token}):
                    self._delivered(value)
            except Exception as error:  # whatever it is, the agent polls meanwhile
                if self._set(DOWN):
                    self._log.warning("wake subscription refused: polling until it works", error=str(error))
            await asyncio.sleep(RETRY_AFTER_ERROR)

    async def _follow_depth(self, client: ConvexClient) -> None:
        while True:
            try:
                async for value in client.subscribe("worker:queueDepth", {"workerToken": self._token}):
                    with self._lock:
                        self._depth_delivered = True
                    self._on_depth(value)
            except Exception as error:  # the worker reads the depth itself meanwhile
                with self._lock:
                    self._depth_delivered = False
                self._log.warning("queue depth subscription refused: polling it until it works", error=str(error))
            await asyncio.sleep(RETRY_AFTER_ERROR)

    def _delivered(self, value: dict) -> None:
        with self._lock:
            before = self._due.state
            self._due = Due(UP, self._due.version + 1, due_at_ms(value))
        self._metrics.wake_updates.inc()
        if before != UP:
            self._set_state_gauge(UP)
            self._log.info("wake subscription up: claiming as soon as a job is due", was=before)
        self._on_change()

    def _set(self, state: str) -> bool:
        """Sets a state other than UP; True if it changed."""
        with self._lock:
            if self._due.state == state:
                return False
            self._due = Due(state, self._due.version + 1, None)
        self._set_state_gauge(state)
        self._on_change()
        return True

    def _set_state_gauge(self, state: str) -> None:
        for name in STATES:
            self._metrics.wake_subscription.labels(name).set(1 if name == state else 0)


class HerdDelay:
    """The random delay before claiming what the subscription announced.

    Every idle agent hears of a new job at the same moment. The first claim changes the value, and
    an agent that hears of that before its own delay is over does not claim for nothing. The range
    of the delay adapts to the fleet, which no agent knows: it doubles after each race this agent
    lost (an empty claim for a job said to be due), and halves after each job it won, between
    `wake_jitter` and MAX_HERD_SPREAD. A lone agent keeps the shortest delay; in a fleet, the
    agents that keep losing step back, so a job costs few claims and still starts quickly.
    """

    def __init__(self, floor: float):
        self.spread = floor

    def draw(self, floor: float) -> float:
        self.spread = max(self.spread, floor)
        return random.uniform(0, self.spread)  # noqa: S311 - spreading load, not a secret

    def lost(self, floor: float) -> None:
        self.spread = min(max(self.spread * 2, floor), max(floor, MAX_HERD_SPREAD))

    def won(self, floor: float) -> None:
        self.spread = max(self.spread / 2, floor)
