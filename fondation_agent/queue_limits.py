"""What the queue's functions accept (queue/component/lib.ts), checked here before anything is sent.

Output that Convex would refuse must fail the job once, as invalid_output, rather than be sent,
refused and retried. tests/test_queue_limits.py fails when these copies differ from queue/component/lib.ts.
"""

from __future__ import annotations

import re

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,199}$"
MAX_TITLE_LENGTH = 500
MAX_KIND_LENGTH = 50
MAX_PROGRESS_LENGTH = 500  # heartbeat progress, release reason
MAX_ERROR_LENGTH = 4_000
MAX_STEP = 1_000  # currentStep, totalSteps
MAX_DOC_CONTENT_BYTES = 1_000_000
MAX_DOCS_PER_CALL = 100
MAX_BYTES_PER_CALL = 4 * 1024 * 1024  # content bytes of one worker:saveDocs call
MAX_DOCS_PER_JOB = 1_000  # also the largest chapterIndex

SLUG = re.compile(SLUG_PATTERN)


def js_length(text: str) -> int:
    """String length as JavaScript counts it (UTF-16 code units), which is what Convex checks."""
    return len(text.encode("utf-16-le")) // 2


def bounded(text: str, limit: int) -> str:
    """`text` cut so that Convex accepts it as a string of at most `limit` (JavaScript) characters."""
    if js_length(text) <= limit:
        return text
    cut = text[: limit - 1]
    while js_length(cut) > limit - 1:
        cut = cut[:-1]
    return cut + "…"
