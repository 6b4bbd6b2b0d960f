"""Reading what the CLI produced without trusting it: text for logs, YAML, files in its output.

The CLI ran Claude with a Bash tool inside a hostile repository, so anything it prints or writes
may be crafted: escape sequences that rewrite an operator's terminal, YAML that nests a million
levels deep or whose aliases make 600 bytes stand for gigabytes, a directory of millions of names,
a file swapped for a symlink to a secret. Everything here is bounded and never follows a link; a
value read from YAML or JSON is formatted only as a scalar (`scalar_text`), never as a container.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from typing import Any

import yaml

from fondation_agent.queue.rules import MAX_DOCS_PER_JOB

# ANSI/VT sequences (CSI, OSC, other ESC pairs), then what is left of C0/C1 controls, the Unicode
# characters that reorder or split lines on display, and lone surrogates (a JSON string may hold
# one; no stream can encode it).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_WHITESPACE = re.compile(r"[ \t]*[\t\n\r\v\f\u2028\u2029][\s\u2028\u2029]*")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
MAX_YAML_BYTES = 1024 * 1024
# A job keeps at most MAX_DOCS_PER_JOB documents: a directory holding ten times as many names is
# no output, and listing it in full would hold all of them in the agent's memory.
MAX_DIRECTORY_ENTRIES = 10 * MAX_DOCS_PER_JOB
# What yaml.safe_load and json.loads make that is not a container.
_SCALARS = (str, int, float, bool, bytes, datetime.date, type(None))


class UntrustedInput(Exception):
    """What the CLI wrote cannot be used (permanent: running it again would write the same)."""


class YamlAliasRefused(UntrustedInput):
    """YAML with an anchor or an alias: no step of the CLI writes one, and a few of them nested make a
    few hundred bytes stand for gigabytes once anything walks or prints what was loaded."""


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader refusing anchors and aliases (merge keys `<<: *x` included) before composing any."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise YamlAliasRefused(f"YAML anchors and aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def clean_text(text: str, limit: int) -> str:
    """One printable line of at most `limit` characters: escape sequences and controls removed."""
    text = _CONTROLS.sub("", _WHITESPACE.sub(" ", _ESCAPES.sub("", text)))
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scalar_text(value: Any, limit: int) -> str:
    """A scalar read from YAML or JSON as clean_text; a container only by its type's name, as
    printing one from hostile output may take far more memory than reading it did."""
    if isinstance(value, _SCALARS):
        return clean_text(str(value), limit)
    return f"a {type(value).__name__}"


def load_yaml(text: str, what: str) -> Any:
    """YAML's plain data (no tags, no objects, no aliases); any failure, however deep, is
    UntrustedInput (YamlAliasRefused for an anchor or an alias)."""
    if len(text) > MAX_YAML_BYTES:
        raise UntrustedInput(f"{what}: more than {MAX_YAML_BYTES} bytes of YAML")
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader)
    except YamlAliasRefused as refused:
        raise YamlAliasRefused(f"{what}: {refused}") from None
    # Deep nesting ends in RecursionError, a 5,000-digit number in ValueError: all mean bad output.
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError, TypeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UntrustedInput(f"{what}: not valid YAML: {clean_text(first, 200)}") from None


def open_directory(name: str | os.PathLike, dir_fd: int | None = None) -> int:
    """A directory descriptor, refusing symlinks; FileNotFoundError when absent."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def list_directory(dir_fd: int, what: str) -> list[os.DirEntry]:
    """A directory's entries (links included, never followed), by name; UntrustedInput past
    MAX_DIRECTORY_ENTRIES, before more names than that are read."""
    entries = []
    with os.scandir(dir_fd) as scan:
        for entry in scan:
            if len(entries) == MAX_DIRECTORY_ENTRIES:
                raise UntrustedInput(f"too many files in {what}: more than {MAX_DIRECTORY_ENTRIES}")
            entries.append(entry)
    return sorted(entries, key=lambda entry: entry.name)


def read_regular_file(dir_fd: int, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file (never a link, FIFO or device), refusing more than max_bytes."""
    # O_NONBLOCK: a FIFO swapped in after a stat cannot block us; fstat re-checks what we opened.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise UntrustedInput(f"{name} is not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UntrustedInput(f"{name} is over {max_bytes} bytes (max_doc_bytes)")
    return data
