"""The gateway's attempts: one token per job attempt, its usage, its verdict, its budget.

Thread-safe: the gateway's event loop reads it for each request while, under `sandbox = "process"`,
the agent's job threads register and delete attempts directly.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

TOKEN_PREFIX = "fgw-"  # noqa: S105 (a prefix, not a secret)
DEFAULT_TTL_S = 24 * 3600.0  # an attempt the agent never deleted (it crashed) stops working after this
_KEPT_AFTER_EXPIRY_S = 3600.0  # its usage stays readable this long after its token stopped working


class Verdict(StrEnum):
    """What the upstream (or the budget) said about an attempt: facts a job cannot forge."""

    CLAUDE_AUTH = "claude_auth"  # the upstream refused the credential (401/403): the host's problem
    RATE_LIMITED = "rate_limited"  # 429/529
    BUDGET_EXCEEDED = "budget_exceeded"  # the attempt used more than its maxTokens


# A later verdict replaces an earlier one only if it ranks higher: a refused credential explains
# everything after it; a budget refusal explains a rate limit met before it.
_RANK = {None: 0, Verdict.RATE_LIMITED: 1, Verdict.BUDGET_EXCEEDED: 2, Verdict.CLAUDE_AUTH: 3}


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    requests: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_creation_tokens += other.cache_creation_tokens
        self.requests += other.requests

    def to_json(self) -> dict[str, int]:
        """The queue's `usage` object (queue/component/schema.ts)."""
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                "cacheReadTokens": self.cache_read_tokens, "cacheCreationTokens": self.cache_creation_tokens,
                "requests": self.requests}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(int(data.get("inputTokens", 0)), int(data.get("outputTokens", 0)),
                   int(data.get("cacheReadTokens", 0)), int(data.get("cacheCreationTokens", 0)),
                   int(data.get("requests", 0)))

    def budget_tokens(self) -> int:
        """What counts against claude_max_tokens: the tokens the model read fresh and wrote."""
        return self.input_tokens + self.output_tokens


@dataclass
class Attempt:
    id: str
    job_id: str
    attempt: int
    max_tokens: int  # 0: no budget
    expires_at: float
    usage: Usage = field(default_factory=Usage)
    verdict: Verdict | None = None
    user: int | None = None  # the uid that claimed the token over the jobs socket (None: not yet)

    def over_budget(self) -> bool:
        return self.max_tokens > 0 and self.usage.budget_tokens() > self.max_tokens

    def report(self) -> dict[str, Any]:
        return {"usage": self.usage.to_json(), "verdict": self.verdict}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()


class Attempts:
    def __init__(self, *, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Attempt] = {}
        self._by_id: dict[str, Attempt] = {}

    def register(self, job_id: str, attempt: int, max_tokens: int, ttl_s: float = DEFAULT_TTL_S) -> tuple[str, str]:
        """A new attempt: (its token, its id). The token is shown once and kept only as a digest."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        entry = Attempt(secrets.token_hex(12), job_id, attempt, max_tokens, self._clock() + ttl_s)
        with self._lock:
            self._purge()
            self._by_digest[_digest(token)] = entry
            self._by_id[entry.id] = entry
        return token, entry.id

    def by_token(self, token: str) -> Attempt | None:
        """The live attempt of a token; None when unknown, deleted or expired."""
        with self._lock:
            entry = self._by_digest.get(_digest(token))
            return entry if entry is not None and entry.expires_at > self._clock() else None

    def get(self, attempt_id: str) -> Attempt | None:
        with self._lock:
            return self._by_id.get(attempt_id)

    def delete(self, attempt_id: str) -> Attempt | None:
        with self._lock:
            entry = self._by_id.pop(attempt_id, None)
            if entry is not None:
                self._by_digest = {d: a for d, a in self._by_digest.items() if a is not entry}
            return entry

    def claim(self, entry: Attempt, uid: int) -> bool:
        """Ties an attempt's token to a user: the first claim wins; False for any other user."""
        with self._lock:
            if entry.user is None:
                entry.user = uid
            return entry.user == uid

    def record(self, entry: Attempt, usage: Usage) -> None:
        with self._lock:
            entry.usage.add(usage)

    def judge(self, entry: Attempt, verdict: Verdict) -> None:
        with self._lock:
            if _RANK[verdict] > _RANK[entry.verdict]:
                entry.verdict = verdict

    def snapshot(self, attempt_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._by_id.get(attempt_id)
            return None if entry is None else entry.report()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def _purge(self) -> None:
        now = self._clock()
        for attempt_id in [i for i, a in self._by_id.items() if a.expires_at + _KEPT_AFTER_EXPIRY_S <= now]:
            entry = self._by_id.pop(attempt_id)
            self._by_digest = {d: a for d, a in self._by_digest.items() if a is not entry}
