"""Turning the CLI's output directory into documents, without trusting anything in it.

The CLI ran on an untrusted repository, so its output directory may hold symlinks to secrets,
FIFOs, huge files or deep trees. Everything is opened relative to a directory descriptor with
O_NOFOLLOW: a symlink anywhere (the directory itself, a subdirectory, a file) is skipped, never
followed, so nothing outside the output directory is ever read.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 4
# What one worker:saveDocs call may carry (convex/lib.ts: MAX_DOCS_PER_CALL, MAX_BYTES_PER_CALL),
# with room for the JSON around the content.
CHUNK_MAX_DOCS = 100
CHUNK_MAX_BYTES = 3 * 1024 * 1024

_LEADING_NUMBER = re.compile(r"^(\d{1,4})[-_. ]")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class InvalidOutput(Exception):
    """The CLI's output cannot become documents (permanent: running again would not help)."""


@dataclass(frozen=True)
class Document:
    title: str
    slug: str
    kind: str
    chapter_index: int
    content: str

    def to_convex(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "slug": self.slug,
            "kind": self.kind,
            "chapterIndex": self.chapter_index,
            "content": self.content,
        }


@dataclass(frozen=True)
class Limits:
    max_doc_bytes: int
    max_docs: int
    max_total_bytes: int


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug[:200] or "document"


def _read_markdown_files(directory: Path, limits: Limits) -> Iterator[tuple[str, bytes]]:
    """Yields (relative path, bytes) of regular *.md files, refusing links and oversized files."""
    try:
        root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as error:
        raise InvalidOutput(f"output directory {directory.name} cannot be opened safely: {error.strerror}") from error
    total = 0
    stack: list[tuple[int, str, int]] = [(root, "", 0)]
    try:
        while stack:
            fd, prefix, depth = stack.pop()
            try:
                for name in sorted(os.listdir(fd)):
                    relative = f"{prefix}{name}"
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                        stack.append((child, f"{relative}/", depth + 1))
                    elif stat.S_ISREG(info.st_mode) and name.endswith(".md"):
                        if info.st_size > limits.max_doc_bytes:
                            raise InvalidOutput(
                                f"{relative} is {info.st_size} bytes; a document may be at most "
                                f"{limits.max_doc_bytes} bytes (max_doc_bytes)"
                            )
                        total += info.st_size
                        if total > limits.max_total_bytes:
                            raise InvalidOutput(
                                f"the output holds more than {limits.max_total_bytes} bytes of Markdown "
                                "(max_output_bytes)"
                            )
                        yield relative, _read_regular_file(fd, name, limits.max_doc_bytes)
                    # Anything else (symlinks above all, FIFOs, devices) is never opened.
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _read_regular_file(dir_fd: int, name: str, max_bytes: int) -> bytes:
    # O_NONBLOCK: a FIFO swapped in after the stat cannot block us; fstat re-checks what we opened.
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise InvalidOutput(f"{name} changed into something other than a file while being read")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidOutput(f"{name} grew past {max_bytes} bytes while being read (max_doc_bytes)")
    return data


def _front_matter(relative: str, text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    try:
        meta = yaml.safe_load(match[1]) or {}
    except yaml.YAMLError as error:
        raise InvalidOutput(f"{relative}: front matter is not valid YAML: {error}") from None
    if not isinstance(meta, dict):
        raise InvalidOutput(f"{relative}: front matter must be a mapping of title, slug, kind, chapterIndex")
    return meta, text[match.end() :]


def _document(relative: str, data: bytes, position: int) -> Document:
    text = data.decode("utf-8", errors="replace")
    meta, body = _front_matter(relative, text)
    stem = Path(relative).name.removesuffix(".md")
    number = _LEADING_NUMBER.match(stem)
    heading = _HEADING.search(body)
    title = meta.get("title", heading[1] if heading else stem)
    slug = meta.get("slug", slugify(relative.removesuffix(".md").replace("/", "-")))
    kind = meta.get("kind", "chapter")
    chapter_index = meta.get("chapterIndex", int(number[1]) if number else position)
    if not isinstance(title, str) or not isinstance(kind, str) or not isinstance(slug, str):
        raise InvalidOutput(f"{relative}: title, slug and kind must be strings")
    if isinstance(chapter_index, bool) or not isinstance(chapter_index, int) or chapter_index < 0:
        raise InvalidOutput(f"{relative}: chapterIndex must be a whole number ≥ 0, got {chapter_index!r}")
    return Document(title.strip()[:500] or stem, slugify(slug), kind[:50], chapter_index, body)


def collect_documents(directories: list[Path], limits: Limits) -> list[Document]:
    """Documents from the first directory that has Markdown files, ordered by chapter."""
    for directory in directories:
        # One past max_docs is enough to refuse: a CLI that wrote 300,000 files is not read in full.
        files = list(itertools.islice(_read_markdown_files(directory, limits), limits.max_docs + 1))
        if files:
            break
    else:
        raise InvalidOutput("the CLI wrote no Markdown documents (looked in: "
                            + ", ".join(d.name for d in directories) + ")")
    if len(files) > limits.max_docs:
        raise InvalidOutput(f"the CLI wrote more than {limits.max_docs} documents (max_docs)")
    documents = [_document(relative, data, position) for position, (relative, data) in enumerate(files)]
    slugs = [document.slug for document in documents]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise InvalidOutput(f"two documents share the slug {duplicates[0]!r}")
    return sorted(documents, key=lambda document: (document.chapter_index, document.slug))


def chunks(documents: list[Document]) -> Iterator[list[dict[str, Any]]]:
    """Groups documents into worker:saveDocs calls that stay under Convex's argument limits."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for document in documents:
        encoded = len(document.content.encode()) + len(document.title.encode()) + 200
        if chunk and (len(chunk) == CHUNK_MAX_DOCS or size + encoded > CHUNK_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(document.to_convex())
        size += encoded
    if chunk:
        yield chunk


def total_bytes(documents: list[Document]) -> int:
    return sum(len(document.content.encode()) for document in documents)


SEED_OUTPUT_DIR = ".claude-tutorial-output"


def remove_shipped_output(repo: Path) -> bool:
    """Deletes an output directory that came with the repository, so it cannot pass as results."""
    shipped = repo / SEED_OUTPUT_DIR
    if shipped.is_symlink() or shipped.is_file():
        shipped.unlink()
        return True
    if shipped.is_dir():
        shutil.rmtree(shipped)
        return True
    return False
