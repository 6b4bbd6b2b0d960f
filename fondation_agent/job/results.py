"""Turning the CLI's output directory into documents, without trusting anything in it.

The real CLI's layout (docs/cli-contract.md): step1_abstractions.yaml, step2_relationships.yaml and
step3_order.yaml (→ `yaml` documents), chapters/ and reviewed-chapters/ (→ `chapter`: a reviewed
chapter replaces the raw one of the same number), tutorials/ (→ `tutorial`), and a `toc` the agent
builds from the order and the abstractions' names. Other Markdown files may carry front matter.

The CLI ran on an untrusted repository, so its output directory may hold symlinks to secrets,
FIFOs, huge files, deep trees, millions of names or YAML aliases. Everything is opened relative to
a directory descriptor with O_NOFOLLOW: a symlink anywhere (the directory itself, a subdirectory, a
file) is skipped, never followed, so nothing outside the output directory is ever read; directories
are listed, and YAML loaded, through untrusted.py's bounded readers. A document Convex would refuse
(fondation_agent/queue/rules.py) is refused here, naming its file.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fondation_agent.job.cli_contract import ABSTRACTIONS, ORDER, RELATIONSHIPS
from fondation_agent.job.untrusted import (
    UntrustedInput,
    YamlAliasRefused,
    clean_text,
    list_directory,
    load_yaml,
    open_directory,
    read_regular_file,
    scalar_text,
)
from fondation_agent.queue import rules as q

MAX_DEPTH = 4
# worker:saveDocs calls stay well under the queue's per-call limits (room for the JSON around).
CHUNK_MAX_DOCS = q.MAX_DOCS_PER_CALL
CHUNK_MAX_BYTES = q.MAX_BYTES_PER_CALL * 3 // 4
# The platform's document kinds (its docs table: chapter | tutorial | toc | yaml).
KINDS = q.DOC_KINDS
YAML_FILES = {ABSTRACTIONS: (1, "Abstractions"), RELATIONSHIPS: (2, "Relationships"), ORDER: (3, "Chapter order")}
# Where a file lies says what it is; reviewed chapters replace raw ones.
DIRECTORY_KINDS = {"chapters": "chapter", "reviewed-chapters": "chapter", "tutorials": "tutorial"}
REVIEWED_DIR = "reviewed-chapters"
MAX_FRONT_MATTER_BYTES = 16 * 1024

# `chapter_3_name.md`, `reviewed_chapter_3_name.md`, `tutorial_3_name.md` (the real CLI), `03_name.md`.
_NUMBERED = re.compile(r"^(?:reviewed_)?(?:chapter|tutorial)_(\d{1,4})(?:_|$)|^(\d{1,4})[-_. ]")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|])")  # `\_` in a heading reads `_`
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

    @functools.cached_property
    def size(self) -> int:
        """UTF-8 bytes of the content: checked, chunked and counted, encoded once."""
        return len(self.content.encode())

    def to_convex(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "slug": self.slug,
            "kind": self.kind,
            "chapterIndex": self.chapter_index,
            "content": self.content,
        }


@dataclass(frozen=True)
class OutputLimits:
    max_doc_bytes: int
    max_docs: int
    max_total_bytes: int


def slugify(text: str) -> str:
    """A slug Convex accepts (rules.SLUG_PATTERN): lower case, starting with a letter or digit."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    slug = re.sub(r"^[^a-z0-9]+", "", slug)[:200].rstrip("-.")
    return slug or "document"


def _files(directory: Path, limits: OutputLimits) -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of the top-level YAML files and all *.md files, refusing oversized ones.

    A directory's files come before its subdirectories', so no more directories are open at a time
    than MAX_DEPTH + 1, however many the CLI made."""
    try:
        root = open_directory(directory)
    except FileNotFoundError:
        return
    except OSError as error:
        raise InvalidOutput(f"output directory {directory.name} cannot be opened safely: {error.strerror}") from error
    total = 0

    def walk(fd: int, prefix: str, depth: int) -> Iterator[tuple[str, bytes]]:
        nonlocal total
        try:
            entries = list_directory(fd, prefix or f"{directory.name}/")
        except UntrustedInput as error:
            raise InvalidOutput(str(error)) from None
        subdirectories = []
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) and depth < MAX_DEPTH:
                subdirectories.append(entry.name)
            elif stat.S_ISREG(info.st_mode) and (entry.name.endswith(".md") or relative in YAML_FILES):
                if info.st_size > limits.max_doc_bytes:
                    raise InvalidOutput(
                        f"{relative} is {info.st_size} bytes; a document may be at most "
                        f"{limits.max_doc_bytes} bytes (max_doc_bytes)"
                    )
                total += info.st_size
                if total > limits.max_total_bytes:
                    raise InvalidOutput(
                        f"the output holds more than {limits.max_total_bytes} bytes of documents (max_output_bytes)"
                    )
                try:
                    yield relative, read_regular_file(fd, entry.name, limits.max_doc_bytes)
                except UntrustedInput as error:
                    raise InvalidOutput(f"{relative}: {error}") from None
            # Anything else (symlinks above all, FIFOs, devices) is never opened.
        for name in subdirectories:
            child = open_directory(name, fd)
            try:
                yield from walk(child, f"{prefix}{name}/", depth + 1)
            finally:
                os.close(child)

    try:
        yield from walk(root, "", 0)
    finally:
        os.close(root)


def _front_matter(relative: str, text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if match is None:
        return {}, text
    if len(match[1]) > MAX_FRONT_MATTER_BYTES:
        raise InvalidOutput(f"{relative}: front matter over {MAX_FRONT_MATTER_BYTES} bytes")
    try:
        meta = load_yaml(match[1], f"{relative}: front matter") or {}
    except UntrustedInput as error:
        raise InvalidOutput(str(error)) from None
    if not isinstance(meta, dict):
        raise InvalidOutput(f"{relative}: front matter must be a mapping of title, slug, kind, chapterIndex")
    return meta, text[match.end() :]


def _markdown(relative: str, data: bytes) -> Document:
    """The document of a Markdown file; chapterIndex -1 when neither front matter nor name gives one."""
    meta, body = _front_matter(relative, data.decode("utf-8", errors="replace"))
    folder, _, name = relative.rpartition("/")
    stem = name.removesuffix(".md")
    number = _NUMBERED.match(stem)
    heading = _HEADING.search(body)
    title = meta.get("title", _MARKDOWN_ESCAPE.sub(r"\1", heading[1]) if heading else stem)
    default_slug = stem.removeprefix("reviewed_") if folder in DIRECTORY_KINDS else relative.removesuffix(".md")
    slug = meta.get("slug", default_slug.replace("/", "-"))
    kind = meta.get("kind", DIRECTORY_KINDS.get(folder, "chapter"))
    chapter_index = meta.get("chapterIndex", int(number[1] or number[2]) if number else -1)
    if not isinstance(title, str) or not isinstance(kind, str) or not isinstance(slug, str):
        raise InvalidOutput(f"{relative}: title, slug and kind must be strings")
    if kind not in KINDS:
        raise InvalidOutput(f"{relative}: kind '{clean_text(kind, 50)}' is not one of {', '.join(KINDS)}")
    if isinstance(chapter_index, bool) or not isinstance(chapter_index, int) or not (
        0 <= chapter_index <= q.MAX_DOCS_PER_JOB or (chapter_index == -1 and "chapterIndex" not in meta)
    ):
        raise InvalidOutput(
            f"{relative}: chapterIndex must be a whole number from 0 to {q.MAX_DOCS_PER_JOB}, "
            f"got {scalar_text(chapter_index, 40)}"
        )
    # The file name is the CLI's (untrusted) too: cleaned like a title it wrote.
    title = q.bounded(clean_text(title, q.MAX_TITLE_LENGTH) or clean_text(stem, q.MAX_TITLE_LENGTH), q.MAX_TITLE_LENGTH)
    return Document(title, slugify(slug), kind, chapter_index, body)


def _yaml_document(relative: str, data: bytes) -> Document:
    step, title = YAML_FILES[relative]
    return Document(title, slugify(relative.removesuffix(".yaml")), "yaml", step, data.decode("utf-8", "replace"))


def _numbered(documents: list[tuple[str, Document]]) -> list[tuple[str, Document]]:
    """Files without a number come after the numbered ones, in file order."""
    following = max((document.chapter_index for _, document in documents), default=-1) + 1
    numbered = []
    for relative, document in documents:
        if document.chapter_index == -1:
            document = dataclasses.replace(document, chapter_index=min(following, q.MAX_DOCS_PER_JOB))
            following += 1
        numbered.append((relative, document))
    return numbered


def _chapters(documents: list[tuple[str, Document]]) -> list[Document]:
    """One chapter per chapterIndex: a reviewed chapter replaces the raw one; two others clash."""
    by_index: dict[int, tuple[str, Document]] = {}
    for relative, document in documents:
        if document.kind != "chapter":
            continue
        reviewed = relative.startswith(f"{REVIEWED_DIR}/")
        held = by_index.get(document.chapter_index)
        if held is not None:
            held_reviewed = held[0].startswith(f"{REVIEWED_DIR}/")
            if held_reviewed == reviewed:
                raise InvalidOutput(
                    f"{held[0]} and {relative} are both chapter {document.chapter_index} (chapterIndex)"
                )
            if held_reviewed:
                continue
        by_index[document.chapter_index] = (relative, document)
    return [document for _, document in by_index.values()]


def _table_of_contents(yaml_documents: dict[str, Document], chapters: list[Document]) -> Document | None:
    """A `toc` from step3_order.yaml's order and step1_abstractions.yaml's names, else the chapters'
    titles (the LLM's YAML may be broken). YAML with aliases is refused, never passed over: no
    honest step writes one."""
    def parsed(name: str) -> Any:
        document = yaml_documents.get(name)
        try:
            return load_yaml(document.content, name) if document else None
        except YamlAliasRefused as refused:
            raise InvalidOutput(str(refused)) from None
        except UntrustedInput:
            return None

    order, abstractions = parsed(ORDER), parsed(ABSTRACTIONS)
    entries = []
    if isinstance(order, dict) and isinstance(order.get("order"), list):
        descriptions = {}
        if isinstance(abstractions, list):
            descriptions = {scalar_text(a.get("name", ""), 200): a.get("description") for a in abstractions
                            if isinstance(a, dict)}
        for item in order["order"][: q.MAX_DOCS_PER_JOB]:
            line = scalar_text(item.get("name", "") if isinstance(item, dict) else item, 200)
            description = descriptions.get(line)
            if isinstance(description, str) and description.strip():
                line += f" — {clean_text(description, 300)}"
            entries.append(line)
    else:
        entries = [document.title for document in sorted(chapters, key=lambda d: d.chapter_index)]
    if not entries:
        return None
    content = "# Table of contents\n\n" + "".join(f"{i}. {entry}\n" for i, entry in enumerate(entries, 1))
    return Document("Table of contents", "toc", "toc", 0, content)


def _check(document: Document, limits: OutputLimits) -> None:
    """Refuses here what worker:saveDocs would refuse (queue/rules.py), so a job fails once, clearly."""
    size = document.size
    limit = min(limits.max_doc_bytes, q.MAX_DOC_CONTENT_BYTES)
    if size > limit:
        raise InvalidOutput(f"document '{document.slug}' is {size} bytes; at most {limit} (max_doc_bytes)")
    if not q.SLUG.match(document.slug):
        raise InvalidOutput(f"document '{document.slug}': a slug the queue would refuse")


def collect_documents(directories: list[Path], limits: OutputLimits) -> list[Document]:
    """Documents from the first directory that has any, in the platform's kinds, ordered by chapter."""
    max_docs = min(limits.max_docs, q.MAX_DOCS_PER_JOB)
    for directory in directories:
        # One past max_docs is enough to refuse: a CLI that wrote 300,000 files is not read in full.
        files = list(itertools.islice(_files(directory, limits), max_docs + 1))
        if files:
            break
    else:
        raise InvalidOutput("the CLI wrote no documents (looked in: " + ", ".join(d.name for d in directories) + ")")
    if len(files) > max_docs:
        raise InvalidOutput(f"the CLI wrote more than {max_docs} documents (max_docs)")
    yaml_documents = {relative: _yaml_document(relative, data) for relative, data in files if relative in YAML_FILES}
    markdown = _numbered([(relative, _markdown(relative, data))
                          for relative, data in files if relative not in YAML_FILES])
    chapters = _chapters(markdown)
    documents = [*yaml_documents.values(), *chapters, *(d for _, d in markdown if d.kind != "chapter")]
    if not any(document.kind == "toc" for document in documents):
        toc = _table_of_contents(yaml_documents, chapters)
        documents += [toc] if toc else []
    for document in documents:
        _check(document, limits)
    slugs = [document.slug for document in documents]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise InvalidOutput(f"two documents share the slug '{duplicates[0]}'")
    return sorted(documents, key=lambda document: (document.chapter_index, KINDS.index(document.kind), document.slug))


def chunks(documents: list[Document]) -> Iterator[list[dict[str, Any]]]:
    """Groups documents into worker:saveDocs calls that stay under Convex's argument limits."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for document in documents:
        encoded = document.size + len(document.title.encode()) + 200
        if chunk and (len(chunk) == CHUNK_MAX_DOCS or size + encoded > CHUNK_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(document.to_convex())
        size += encoded
    if chunk:
        yield chunk


def total_bytes(documents: list[Document]) -> int:
    return sum(document.size for document in documents)
