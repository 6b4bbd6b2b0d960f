"""The queue's vocabulary and limits: rules.json, a copy of the component's queue/component/rules.json
(setuptools ships only what is inside the package; tests/queue/test_rules.py keeps the two identical).

Statuses, error codes, error kinds and what the queue's functions accept are defined once, in that
file. Output that Convex would refuse must fail the job once, as invalid_output, rather than be
sent, refused and retried: the agent checks the same limits before anything is sent.
"""

from __future__ import annotations

import itertools
import json
import re
from enum import StrEnum
from importlib import resources

_RULES = json.loads(resources.files(__package__).joinpath("rules.json").read_text(encoding="utf-8"))
_STATUSES = _RULES["statuses"]

Status = StrEnum("Status", [(name.upper(), name) for group in _STATUSES.values() for name in group])
ACTIVE_STATUSES = frozenset(Status(name) for name in _STATUSES["active"])
FINISHED_STATUSES = frozenset(Status(name) for name in _STATUSES["finished"])
ErrorCode = StrEnum("ErrorCode", [(name.upper(), name) for name in _RULES["errorCodes"]])
ErrorKind = StrEnum("ErrorKind", [(name.upper(), name) for name in _RULES["errorKinds"]])
ERROR_KIND_PATTERN = _RULES["errorKindPattern"]

# A document's kind, as the platform's docs table has it; the order documents are listed in.
DOC_KINDS: tuple[str, ...] = tuple(_RULES["docKinds"])
SLUG_PATTERN = _RULES["slugPattern"]
SLUG = re.compile(SLUG_PATTERN)
_LIMITS = _RULES["limits"]
MAX_URL_LENGTH = _LIMITS["maxUrlLength"]  # repositoryUrl
MAX_TITLE_LENGTH = _LIMITS["maxTitleLength"]
MAX_PROGRESS_LENGTH = _LIMITS["maxProgressLength"]  # heartbeat progress, release reason
MAX_ERROR_LENGTH = _LIMITS["maxErrorLength"]
MAX_STEP = _LIMITS["maxStep"]  # currentStep, totalSteps
MAX_DOC_CONTENT_BYTES = _LIMITS["maxDocContentBytes"]
MAX_DOCS_PER_CALL = _LIMITS["maxDocsPerCall"]
MAX_BYTES_PER_CALL = _LIMITS["maxBytesPerCall"]  # content bytes of one worker:saveDocs call
MAX_DOCS_PER_JOB = _LIMITS["maxDocsPerJob"]  # also the largest chapterIndex
# The CLI's recent lines, sent with heartbeats (worker:heartbeat's logs): at most this many lines of
# at most this many characters, and this many bytes of text, per call and in the job's tail.
LOG_LEVELS: tuple[str, ...] = tuple(_RULES["logLevels"])
MAX_LOG_LINES = _LIMITS["maxLogLines"]
MAX_LOG_BYTES = _LIMITS["maxLogBytes"]
MAX_LOG_LINE_LENGTH = _LIMITS["maxLogLineLength"]


def js_length(text: str) -> int:
    """String length as JavaScript counts it (UTF-16 code units), which is what Convex checks."""
    return len(text.encode("utf-16-le")) // 2


def bounded(text: str, limit: int) -> str:
    """`text` cut so that Convex accepts it as a string of at most `limit` (JavaScript) characters."""
    if js_length(text) <= limit:
        return text
    # The longest prefix that leaves one unit for the ellipsis, in one pass.
    units = itertools.accumulate(2 if ord(character) > 0xFFFF else 1 for character in text)
    end = next(index for index, total in enumerate(units) if total > limit - 1)
    return text[:end] + "…"
