"""Structured logging for the agent: JSON lines (or a console format) on a stream, or journald.

`configure_logging()` sets the output once at start-up; `get_logger(**context)` hands out structlog
loggers whose every line carries `timestamp` (ISO 8601, UTC), `level`, `event`, `worker_id` and the
bound context. Secrets (keys named like token, password, secret, authorization, api_key) are
redacted before anything is written.

Under systemd, when stderr is the journal stream (`JOURNAL_STREAM` names stderr's device:inode, see
systemd.exec(5)), each entry goes to journald with the native protocol instead: one datagram to
`/run/systemd/journal/socket` with `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER` and one journal field per
context key (`JOB_ID`, `WORKER_ID`, `ATTEMPT`, ...), so `journalctl -u fondation-agent JOB_ID=<id>`
shows one job. Entries too large for a datagram are passed as a sealed memfd, as sd_journal_send()
does. If journald cannot be reached the line is written to the stream instead; logging never raises.

Why not a library: systemd's own bindings (`systemd.journal.send`, PyPI systemd-python, Debian
python3-systemd) are a C extension without wheels, so every developer machine, CI run and `make deb`
would need libsystemd-dev, a compiler and Python's headers. cysystemd (PyPI) has wheels, but each
bundles its own copy of libsystemd with libgcrypt, lz4, zstd and lzma (5 MB of native code in the
.deb, outside Debian's security updates, beside the host's own libsystemd). Both fix the socket
path inside libsystemd, so the journal fields could be tested only against a real journald (the VM
tier), where this sink is tested against a socket of the test's own. The protocol is small and
stable (systemd's "Native Journal Protocol" document).

The structlog configuration is installed once and never replaced: `configure_logging()` only swaps
the sink it writes to, so loggers bound before (module level, long-lived job loggers) follow it.
Records of the stdlib `logging` module (libraries) at WARNING and above take the same path.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "fondation-agent"
REDACTED = "[redacted]"

# Values longer than this are cut (journald's own per-field limit is far above; this keeps a runaway
# message from costing the host memory). Datagrams above the socket's send buffer use a memfd.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# What is left of MESSAGE when neither a large datagram nor a memfd could be sent.
DATAGRAM_FALLBACK_BYTES = 160 * 1024
_SNDBUF_WANTED = 8 * 1024 * 1024
_SEND_TIMEOUT_S = 5.0

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
# syslog(3) priorities, as journald's PRIORITY field wants them.
_PRIORITIES = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "warn": 4, "error": 3, "exception": 3,
               "critical": 2, "fatal": 2}
_METHOD_LEVELS = {**_LEVELS, "warn": logging.WARNING, "exception": logging.ERROR,
                  "fatal": logging.CRITICAL, "notice": logging.INFO, "msg": logging.INFO}

_SECRET_MARKERS = ("token", "password", "passwd", "secret", "authorization", "api_key", "apikey")
# Keys rendered apart from the key=value context (or not at all) in journal MESSAGE and fields.
_NOT_CONTEXT = ("timestamp", "level", "event", "exception", "stack", "exc_info", "stack_info")
# Journal fields this module sets itself; a context key that maps to one of them is not a field.
_RESERVED_FIELDS = frozenset({"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY",
                              "SYSLOG_PID", "SYSLOG_TIMESTAMP", "SYSLOG_RAW", "CODE_FILE", "CODE_LINE",
                              "CODE_FUNC", "ERRNO", "TIMESTAMP", "LEVEL", "EVENT", "EXCEPTION", "STACK"})
_FIELD_INVALID = re.compile(r"[^A-Z0-9_]")
_BARE_VALUE = re.compile(r"[^\s\"'=\\]+")


# --------------------------------------------------------------------------------------------------
# Public API


def configure_logging(
    *,
    log_format: str = "json",
    worker_id: str,
    stream: TextIO | None = None,
    journal: bool | None = None,
    level: str | int = "info",
    journal_socket: str | None = None,
) -> None:
    """Send every log line (structlog and stdlib WARNING+) to `stream` or to journald.

    `log_format` is "json" (one object per line) or "console" (aligned, for humans). `stream`
    defaults to the current `sys.stderr`. `journal=None` detects journald from `JOURNAL_STREAM`
    (see `stream_is_journal`), `True` forces the native protocol, `False` forbids it.
    `journal_socket` overrides the socket path (tests); the default is `JOURNAL_SOCKET`, read at call
    time. May be called again; loggers already handed out follow the new settings.
    """
    if log_format not in ("json", "console"):
        raise ValueError(f"log_format must be 'json' or 'console', not {log_format!r}")
    if stream is None:
        stream = sys.stderr
    if journal is None:
        journal = stream_is_journal(stream)
    min_level = level if isinstance(level, int) else _LEVELS.get(str(level).lower())
    if min_level is None:
        raise ValueError(f"unknown log level {level!r}")

    global _sink
    _sink = _Sink(
        log_format=log_format,
        worker_id=worker_id,
        stream=stream,
        journal_socket=(journal_socket or JOURNAL_SOCKET) if journal else None,
        min_level=min_level,
    )
    _install_structlog()
    _install_stdlib_handler()


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A structlog logger (filtering bound logger) with `bound` as context; safe to share across threads."""
    _install_structlog()
    logger: FilteringBoundLogger = structlog.get_logger()
    return logger.bind(**bound)


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is systemd's journal stream for this service.

    systemd sets `JOURNAL_STREAM=<device>:<inode>` (decimal) when it connects stdout or stderr to
    the journal; the variable is inherited by children, so it only counts if the stream's own
    file descriptor has that device and inode. Streams without a file descriptor never match.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        expected = (int(device), int(inode))
        status = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError, TypeError, RuntimeError):
        # io.UnsupportedOperation is both an OSError and a ValueError.
        return False
    return (status.st_dev, status.st_ino) == expected


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace values of secret-looking keys (at any depth) with "[redacted]"."""
    for key, value in list(event_dict.items()):
        if key == "event":
            continue
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redact_nested(value, 0)
    return event_dict


# --------------------------------------------------------------------------------------------------
# Processors


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower().replace("-", "_")
    return any(marker in lowered for marker in _SECRET_MARKERS)


def _redact_nested(value: Any, depth: int) -> Any:
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret_key(k) else _redact_nested(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_nested(item, depth + 1) for item in value]
    return value


def _filter_level(_logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method, logging.INFO) < _sink.min_level:
        raise structlog.DropEvent
    return event_dict


def _add_worker_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("worker_id", _sink.worker_id)
    return event_dict


def _to_sink(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> tuple[tuple[Any, ...], dict]:
    # Last processor: hand the event dict itself to the wrapped logger (_Emitter).
    return (event_dict,), {}


# One list object for the life of the process: bound loggers keep a reference to it, and
# structlog.testing.capture_logs() edits it in place.
_PROCESSORS: list[Any] = [
    _filter_level,
    structlog.contextvars.merge_contextvars,
    _add_worker_id,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    redact_secrets,
    _to_sink,
]
_installed = False
_install_lock = threading.Lock()


def _install_structlog() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        structlog.configure(
            processors=_PROCESSORS,
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            logger_factory=_emitter_factory,
            context_class=dict,
            cache_logger_on_first_use=False,
        )
        _installed = True


class _Emitter:
    """The 'wrapped logger': every method name structlog calls lands in the current sink."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _emit

    def __repr__(self) -> str:
        return "<fondation_agent.host.logs emitter>"


_EMITTER = _Emitter()


def _emitter_factory(*_args: Any) -> _Emitter:
    return _EMITTER


def _emit(event_dict: Any = None, *args: Any, **kwargs: Any) -> None:
    if not isinstance(event_dict, dict):
        # Not from our chain (someone reconfigured the processors): keep it readable.
        event_dict = {"event": str(event_dict), **kwargs}
    _sink.emit(event_dict)


# --------------------------------------------------------------------------------------------------
# Rendering


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _ordered(event_dict: EventDict) -> dict[str, Any]:
    head = {key: event_dict[key] for key in ("timestamp", "level", "event") if key in event_dict}
    return {**head, **{k: v for k, v in event_dict.items() if k not in head}}


def render_json(event_dict: EventDict) -> str:
    """One JSON object, `timestamp`, `level`, `event` first; unserializable values as str()."""
    try:
        return json.dumps(_ordered(event_dict), default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):  # keys that are not strings, circular structures
        return json.dumps({str(k): str(v) for k, v in _ordered(event_dict).items()}, ensure_ascii=False)


def _kv_value(value: Any) -> str:
    """A journal field's value, quoted where a string would not read as one word after `key=`."""
    if isinstance(value, str) and not _BARE_VALUE.fullmatch(value):
        return json.dumps(value, ensure_ascii=False)
    return _field_value(value)


def render_message(event_dict: EventDict) -> str:
    """The journal MESSAGE: `event key=value ...`, then the traceback on the following lines."""
    parts = [str(event_dict.get("event", ""))]
    parts += [f"{key}={_kv_value(value)}" for key, value in event_dict.items() if key not in _NOT_CONTEXT]
    message = " ".join(part for part in parts if part)
    for key in ("stack", "exception"):
        if event_dict.get(key):
            message += "\n" + str(event_dict[key]).rstrip("\n")
    return message


def journal_field_name(key: str) -> str | None:
    """`job_id` -> `JOB_ID`; None when nothing valid is left (journald refuses leading `_`, digits)."""
    name = _FIELD_INVALID.sub("_", str(key).upper()).lstrip("_0123456789")[:64]
    return name or None


def _field_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _utf8_prefix(data: bytes, limit: int) -> bytes:
    # Cut at `limit` without splitting a UTF-8 sequence.
    return data[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def journal_fields(event_dict: EventDict, identifier: str = SYSLOG_IDENTIFIER) -> list[tuple[str, bytes]]:
    """The journal entry for one event: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, then context fields."""
    message = render_message(event_dict).encode("utf-8", errors="replace")
    if len(message) > MAX_MESSAGE_BYTES:
        message = _truncate(message, MAX_MESSAGE_BYTES)
    level = str(event_dict.get("level", "info")).lower()
    fields: list[tuple[str, bytes]] = [
        ("MESSAGE", message),
        ("PRIORITY", str(_PRIORITIES.get(level, 6)).encode()),
        ("SYSLOG_IDENTIFIER", identifier.encode()),
    ]
    seen = {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"}
    for key, value in event_dict.items():
        if key in _NOT_CONTEXT:
            continue
        name = journal_field_name(key)
        if name is None or name in _RESERVED_FIELDS or name in seen:
            continue
        seen.add(name)
        data = _field_value(value).encode("utf-8", errors="replace")
        fields.append((name, _truncate(data, 64 * 1024) if len(data) > 64 * 1024 else data))
    return fields


def _truncate(data: bytes, limit: int) -> bytes:
    note = b"\n[truncated from %d bytes]" % len(data)
    return _utf8_prefix(data, max(0, limit - len(note))) + note


def encode_journal_entry(fields: list[tuple[str, bytes]]) -> bytes:
    """journald's native format: `KEY=value\\n`, or `KEY\\n<u64 le><value>\\n` for multi-line values."""
    out = bytearray()
    for name, value in fields:
        key = name.encode("ascii")
        if b"\n" in value:
            out += key + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
        else:
            out += key + b"=" + value + b"\n"
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# Output


class _Sink:
    def __init__(
        self,
        *,
        log_format: str,
        worker_id: str,
        stream: TextIO | None,
        journal_socket: str | None,
        min_level: int,
    ) -> None:
        self.log_format = log_format
        self.worker_id = worker_id
        self._stream = stream  # None: whatever sys.stderr is at the time of writing
        self.journal_socket = journal_socket
        self.min_level = min_level
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._console = (
            structlog.dev.ConsoleRenderer(
                colors=_isatty(stream), exception_formatter=structlog.dev.plain_traceback
            )
            if log_format == "console"
            else None
        )
        if journal_socket is not None:
            with contextlib.suppress(OSError):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # not inherited by children
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_WANTED)
                sock.settimeout(_SEND_TIMEOUT_S)
                self._socket = sock

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, event_dict: EventDict) -> None:
        try:
            if self._console is None or self._socket is not None:
                # Traceback as text in `exception` (the console renderer formats exc_info itself).
                event_dict = structlog.processors.format_exc_info(None, "", event_dict)
            sock, path = self._socket, self.journal_socket
            if sock is not None and path is not None and self._send_journal(sock, path, event_dict):
                return
            self._write(self._render_line(event_dict))
        except Exception:  # never raise from logging
            with contextlib.suppress(Exception):
                self._write(json.dumps({"event": str(event_dict.get("event")), "level": "error",
                                        "worker_id": self.worker_id, "logging_error": True}))

    def _render_line(self, event_dict: EventDict) -> str:
        if self._console is not None:
            return str(self._console(None, "", dict(event_dict))).rstrip("\n")
        return render_json(event_dict)

    def _write(self, line: str) -> None:
        stream = self.stream
        with self._lock:  # whole lines only, whatever the number of threads
            try:
                stream.write(line + "\n")
            except UnicodeEncodeError:
                stream.write(line.encode("ascii", "backslashreplace").decode("ascii") + "\n")
            with contextlib.suppress(Exception):
                stream.flush()

    @staticmethod
    def _send_journal(sock: socket.socket, path: str, event_dict: EventDict) -> bool:
        fields = journal_fields(event_dict)
        data = encode_journal_entry(fields)
        try:
            sock.sendto(data, path)
            return True
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                return False  # no journald (ENOENT, ECONNREFUSED), stuck (timeout): use the stream
        if _send_memfd(sock, path, data):
            return True
        message = fields[0][1]
        if len(message) > DATAGRAM_FALLBACK_BYTES:
            fields[0] = ("MESSAGE", _truncate(message, DATAGRAM_FALLBACK_BYTES))
        fields = [(name, value if len(value) <= 4096 else _truncate(value, 4096)) if i else (name, value)
                  for i, (name, value) in enumerate(fields)]
        try:
            sock.sendto(encode_journal_entry(fields), path)
            return True
        except OSError:
            return False


def _send_memfd(sock: socket.socket, path: str, data: bytes) -> bool:
    """Pass the entry as a sealed memfd with an empty datagram, like sd_journal_sendv() does."""
    fd = -1
    try:
        fd = os.memfd_create("journal-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        # (socket.send_fds() of Python 3.11 ignores its address argument.)
        sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0, path)
        return True
    except (OSError, AttributeError, ValueError):
        return False
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# Until configure_logging() is called: JSON on the current sys.stderr, INFO and above.
_sink = _Sink(log_format="json", worker_id="", stream=None, journal_socket=None, min_level=logging.INFO)


# --------------------------------------------------------------------------------------------------
# stdlib logging


class _StdlibHandler(logging.Handler):
    """Routes records of the stdlib `logging` module (WARNING+) through the structlog chain."""

    _busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "active", False):
            return  # a record raised while emitting one: drop it rather than recurse
        self._busy.active = True
        try:
            with contextlib.suppress(Exception):  # never raise from logging
                try:
                    message = record.getMessage()
                except Exception:
                    message = str(record.msg)
                extra: dict[str, Any] = {"logger": record.name}
                if record.exc_info:
                    extra["exc_info"] = record.exc_info
                get_logger().log(_standard_level(record.levelno), message, **extra)
        finally:
            self._busy.active = False


def _standard_level(levelno: int) -> int:
    for standard in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= standard:
            return standard
    return logging.DEBUG


def _install_stdlib_handler() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibHandler):
            root.removeHandler(handler)
    handler = _StdlibHandler(level=logging.WARNING)
    root.addHandler(handler)
