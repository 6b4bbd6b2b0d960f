"""Reading what the CLI produced without trusting it: text for logs, YAML, files in its output.

The CLI ran Claude with a Bash tool inside a hostile repository, so anything it prints or writes
may be crafted: escape sequences that rewrite an operator's terminal, YAML that nests a million
levels deep, a file swapped for a symlink to a secret. Everything here is bounded and never
follows a link.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

import yaml

# ANSI/VT sequences (CSI, OSC, other ESC pairs), then what is left of C0/C1 controls and the
# Unicode characters that reorder or split lines on display.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]")
_WHITESPACE = re.compile(r"[ \t]*[\t\n\r\v\f\u2028\u2029][\s\u2028\u2029]*")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_YAML_BYTES = 1024 * 1024


class UntrustedInput(Exception):
    """What the CLI wrote cannot be used (permanent: running it again would write the same)."""


def clean_text(text: str, limit: int) -> str:
    """One printable line of at most `limit` characters: escape sequences and controls removed."""
    text = _CONTROLS.sub("", _WHITESPACE.sub(" ", _ESCAPES.sub("", text)))
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_yaml(text: str, what: str) -> Any:
    """YAML's plain data (no tags, no objects); any failure, however deep, is UntrustedInput."""
    if len(text) > MAX_YAML_BYTES:
        raise UntrustedInput(f"{what}: more than {MAX_YAML_BYTES} bytes of YAML")
    try:
        return yaml.safe_load(text)
    # Deep nesting ends in RecursionError, a 5,000-digit number in ValueError: all mean bad output.
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError, TypeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UntrustedInput(f"{what}: not valid YAML: {clean_text(first, 200)}") from None


def open_directory(name: str | os.PathLike, dir_fd: int | None = None) -> int:
    """A directory descriptor, refusing symlinks; FileNotFoundError when absent."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


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
