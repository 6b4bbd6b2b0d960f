"""One line of the CLI's stdout, made readable and safe for the journal, with its progress.

The real CLI logs with pino: when stdout is not a TTY every line is a JSON object
(`{"level":30,"time":…,"msg":"[FONDATION_STEP_2/6] …","step":"2/6","phase":"Analyze"}`), and a
failure is logged there too (`{"level":50,"msg":"Analysis failed","error":"…"}`), stderr staying
empty. Other lines are taken as plain text at info level. Whatever a line holds, reading it never
raises: the thread that reads it is the one draining the CLI's stdout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fondation_agent.job.cli_contract import Progress, parse_progress
from fondation_agent.job.untrusted import clean_text

MAX_TEXT = 2000
MAX_FIELD = 300
MAX_FIELDS = 20
# pino's numeric levels → the agent's log methods (journal priorities 7, 6, 4, 3, 2); every finite
# number has one.
_PINO_LEVELS = ((60, "critical"), (50, "error"), (40, "warning"), (30, "info"), (-math.inf, "debug"))
_NAMED_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warn": "warning", "warning": "warning",
                 "error": "error", "fatal": "critical", "critical": "critical"}
# pino's own bookkeeping: not worth a place in the journal line.
_PINO_HOUSEKEEPING = frozenset({"level", "time", "pid", "hostname", "msg", "v"})
ERROR_LEVELS = ("error", "critical")


@dataclass(frozen=True)
class CliLine:
    text: str  # printable, one line, bounded
    level: str  # debug, info, warning, error or critical
    progress: Progress | None
    error: str | None  # what an error-level line says went wrong (msg and its `error` field)


def read_cli_line(raw: str) -> CliLine:
    record = _json_record(raw)
    if record is None:
        text = clean_text(raw, MAX_TEXT)
        return CliLine(text, "info", parse_progress(text), None)
    level = _level(record.get("level"))
    message = clean_text(_text(record.get("msg", "")), MAX_TEXT)
    fields = [(key, value) for key, value in record.items() if key not in _PINO_HOUSEKEEPING][:MAX_FIELDS]
    rendered = " ".join(f"{clean_text(key, 50)}={_field(value)}" for key, value in fields)
    text = clean_text(f"{message} {rendered}" if rendered else message, MAX_TEXT)
    error = None
    if level in ERROR_LEVELS:
        detail = record.get("error") or record.get("err")
        detail = detail.get("message") if isinstance(detail, dict) else detail
        error = clean_text(f"{message}: {_text(detail)}" if detail else message, MAX_TEXT)
    return CliLine(text, level, parse_progress(message), error)


def _json_record(raw: str) -> dict[str, Any] | None:
    if not raw.lstrip().startswith("{"):
        return None
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and ("msg" in record or "level" in record) else None


def _level(value: Any) -> str:
    """pino's number or a level's name; anything else (true, NaN, Infinity, a list) is info."""
    if isinstance(value, str):
        return _NAMED_LEVELS.get(value.lower(), "info")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "info"
    if isinstance(value, float) and not math.isfinite(value):  # (math.isfinite overflows on a huge int)
        return "info"
    return next(name for threshold, name in _PINO_LEVELS if value >= threshold)


def _text(value: Any) -> str:
    """A JSON value as text: a string as it is, anything else as its JSON (json.loads makes trees,
    never shared, so that is no longer than the line it came from)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return type(value).__name__


def _field(value: Any) -> str:
    text = clean_text(_text(value), MAX_FIELD)
    return text if text and " " not in text and '"' not in text else json.dumps(text, ensure_ascii=False)
