"""Reading the CLI's output: the real layout's kinds, front matter, limits, and nothing outside."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from fondation_agent.job import results
from fondation_agent.job.results import (
    CHUNK_MAX_BYTES,
    Document,
    InvalidOutput,
    OutputLimits,
    chunks,
    collect_documents,
    slugify,
)
from fondation_agent.job.untrusted import MAX_DIRECTORY_ENTRIES
from fondation_agent.queue import rules as queue_rules

LIMITS = OutputLimits(max_doc_bytes=10_000, max_docs=20, max_total_bytes=50_000)
ABSTRACTIONS = """- name: Queue
  description: Jobs wait here.
  file_paths: [queue.py]
- name: "Worker"
  description: Takes jobs.
  file_paths: [worker.py]
"""
ORDER = "order:\n  - {index: 1, name: Worker, reasoning: first}\n  - {index: 0, name: Queue, reasoning: then}\n"


def alias_bomb(key: str) -> str:
    """About 600 bytes of YAML whose `key` stands for 9**9 strings, once aliases are expanded."""
    levels = ['a0: &a0 [' + ",".join(['"lol"'] * 9) + "]"]
    levels += [f"a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 9)]
    return "\n".join([*levels, f"{key}: *a8"]) + "\n"


@pytest.fixture
def memory_cap():
    """Address space for 256 MiB more than in use: a bomb that comes back fails as MemoryError
    instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (in_use + 256 * 2**20, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def summary(docs: list[Document]) -> list[tuple[str, int, str, str]]:
    return [(d.kind, d.chapter_index, d.slug, d.title) for d in docs]


def test_the_real_layout_becomes_the_platforms_kinds(tmp_path):
    write(tmp_path / "step1_abstractions.yaml", ABSTRACTIONS)
    write(tmp_path / "step2_relationships.yaml", "summary: s\nrelationships: []\n")
    write(tmp_path / "step3_order.yaml", ORDER)
    write(tmp_path / "chapters" / "chapter_1_worker.md", "# Worker (raw)\n")
    write(tmp_path / "chapters" / "chapter_0_queue.md", "# Queue (raw)\n")
    write(tmp_path / "reviewed-chapters" / "reviewed_chapter_1_worker.md", "# Worker\nreviewed\n")
    write(tmp_path / "tutorials" / "tutorial_1_worker.md", "# Try the worker\n")
    docs = collect_documents([tmp_path], LIMITS)
    assert summary(docs) == [
        ("chapter", 0, "chapter_0_queue", "Queue (raw)"),  # not reviewed: the raw chapter stays
        ("toc", 0, "toc", "Table of contents"),
        ("chapter", 1, "chapter_1_worker", "Worker"),  # the reviewed chapter replaces the raw one
        ("tutorial", 1, "tutorial_1_worker", "Try the worker"),
        ("yaml", 1, "step1_abstractions", "Abstractions"),
        ("yaml", 2, "step2_relationships", "Relationships"),
        ("yaml", 3, "step3_order", "Chapter order"),
    ]
    assert docs[2].content == "# Worker\nreviewed\n"
    assert docs[1].content == "# Table of contents\n\n1. Worker — Takes jobs.\n2. Queue — Jobs wait here.\n"
    assert docs[4].content == ABSTRACTIONS, "YAML documents are stored as written"


def test_without_an_order_the_toc_lists_the_chapters(tmp_path):
    write(tmp_path / "chapters" / "chapter_2_b.md", "# Bee\n")
    write(tmp_path / "chapters" / "chapter_1_a.md", "# Ay\n")
    write(tmp_path / "step3_order.yaml", "order: [unclosed\n")  # the LLM's YAML may be broken
    toc = next(d for d in collect_documents([tmp_path], LIMITS) if d.kind == "toc")
    assert toc.content == "# Table of contents\n\n1. Ay\n2. Bee\n"


def test_front_matter_and_defaults(tmp_path):
    front_matter = "---\ntitle: The course\nslug: index\nkind: toc\nchapterIndex: 0\n---\n"
    write(tmp_path / "00_index.md", front_matter + "# Ignored\n")
    write(tmp_path / "02_second.md", "# Second chapter\nbody\n")
    write(tmp_path / "notes.md", "no heading here\n")
    write(tmp_path / "_intro.md", "# Intro\n")  # Convex wants slugs that start with a letter or digit
    write(tmp_path / "image.png", "not markdown")
    docs = collect_documents([tmp_path], LIMITS)
    assert summary(docs) == [
        ("toc", 0, "index", "The course"),  # the CLI's own toc: none is built
        ("chapter", 2, "02_second", "Second chapter"),
        ("chapter", 3, "intro", "Intro"),  # no number: after the numbered files, in file order
        ("chapter", 4, "notes", "notes"),
    ]
    assert docs[0].content == "# Ignored\n", "front matter is not part of the stored content"


def test_the_first_directory_with_documents_wins(tmp_path):
    empty, fallback = tmp_path / "output", tmp_path / "repo" / ".claude-tutorial-output"
    empty.mkdir()
    write(fallback / "01_a.md", "# A\n")
    assert [d.slug for d in collect_documents([empty, fallback], LIMITS)] == ["toc", "01_a"]
    with pytest.raises(InvalidOutput, match="wrote no documents"):
        collect_documents([empty, tmp_path / "missing"], LIMITS)


def test_symlinks_are_never_followed(tmp_path):
    secret = write(tmp_path / "secret" / "token.md", "TOP SECRET")
    out = tmp_path / "out"
    write(out / "01_real.md", "# Real\n")
    (out / "02_link.md").symlink_to(secret)
    (out / "step1_abstractions.yaml").symlink_to(secret)
    (out / "linked-dir").symlink_to(secret.parent)
    docs = collect_documents([out], LIMITS)
    assert [d.slug for d in docs] == ["toc", "01_real"]
    linked_output = tmp_path / "linked-output"
    linked_output.symlink_to(secret.parent)
    with pytest.raises(InvalidOutput, match="cannot be opened safely"):
        collect_documents([linked_output], LIMITS)


def test_fifos_and_devices_are_skipped_without_blocking(tmp_path):
    write(tmp_path / "01_a.md", "# A\n")
    os.mkfifo(tmp_path / "02_fifo.md")
    os.mkfifo(tmp_path / "step3_order.yaml")
    assert [d.slug for d in collect_documents([tmp_path], LIMITS)] == ["toc", "01_a"]


def test_subdirectories_are_read_to_a_bounded_depth(tmp_path):
    write(tmp_path / "part1" / "01_a.md", "# A\n")
    write(tmp_path / "a" / "b" / "c" / "d" / "e" / "deep.md", "# too deep\n")
    assert [d.slug for d in collect_documents([tmp_path], LIMITS)] == ["toc", "part1-01_a"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"01_big.md": "x" * 10_001}, "01_big.md is 10001 bytes; a document may be at most 10000 bytes"),
        ({f"{i:02}_d.md": "x" * 9_000 for i in range(6)}, "more than 50000 bytes of documents"),
        ({f"{i:02}_d.md": "x" for i in range(21)}, "wrote more than 20 documents"),
        ({"01_a.md": "---\ntitle: [unclosed\n---\n"}, "front matter: not valid YAML"),
        ({"01_a.md": "---\n" + "[" * 3000 + "]" * 3000 + "\n---\n"}, "front matter: not valid YAML"),
        ({"01_a.md": "---\nchapterIndex: 1" + "0" * 5000 + "\n---\n"}, "front matter: not valid YAML"),
        ({"01_a.md": "---\nchapterIndex: 1001\n---\n"}, "chapterIndex must be a whole number from 0 to 1000"),
        ({"01_a.md": "---\nchapterIndex: .inf\n---\n"}, "chapterIndex must be a whole number"),
        ({"01_a.md": "---\n- a list\n---\n"}, "front matter must be a mapping"),
        ({"01_a.md": "---\nchapterIndex: -1\n---\n"}, "chapterIndex must be a whole number"),
        ({"01_a.md": "---\nkind: index\n---\n"}, "kind 'index' is not one of chapter, tutorial, toc, yaml"),
        ({"01_a.md": "---\nslug: same\n---\n", "02_b.md": "---\nslug: same\n---\n"}, "share the slug 'same'"),
        ({"chapters/chapter_1_a.md": "a", "chapters/chapter_1_b.md": "b"}, "are both chapter 1"),
    ],
)
def test_invalid_output_is_a_clear_error(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(InvalidOutput, match=message.replace("[", r"\[")):
        collect_documents([tmp_path], LIMITS)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("step3_order.yaml", alias_bomb("order")),
        ("chapters/chapter_1_a.md", "---\n" + alias_bomb("chapterIndex") + "---\n# A\n"),
    ],
)
def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path, memory_cap, name, text):
    write(tmp_path / "chapters" / "chapter_0_a.md", "# A\n")
    write(tmp_path / name, text)
    with pytest.raises(InvalidOutput, match=r"YAML anchors and aliases are not allowed \(line 1\)") as refused:
        collect_documents([tmp_path], LIMITS)
    assert str(refused.value).startswith(name)


def test_a_directory_is_listed_up_to_a_cap(tmp_path):
    chapters = tmp_path / "chapters"
    write(chapters / "chapter_1_a.md", "# A\n")
    for i in range(MAX_DIRECTORY_ENTRIES - 1):
        (chapters / f"noise{i}").touch()
    assert [d.slug for d in collect_documents([tmp_path], LIMITS)] == ["toc", "chapter_1_a"]
    (chapters / "one-more").touch()
    with pytest.raises(InvalidOutput, match=f"too many files in chapters/: more than {MAX_DIRECTORY_ENTRIES}"):
        collect_documents([tmp_path], LIMITS)


def test_subdirectories_are_opened_one_branch_at_a_time(tmp_path):
    """The agent's descriptors serve every job: a CLI that made hundreds of directories must not
    have them all open at once."""
    for i in range(200):
        (tmp_path / f"d{i:03}").mkdir()
    write(tmp_path / "d199" / "01_a.md", "# A\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 20, hard))
    try:
        docs = collect_documents([tmp_path], LIMITS)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [d.slug for d in docs] == ["toc", "d199-01_a"]


def test_chunks_stay_under_convex_limits():
    docs = [Document(f"t{i}", f"s{i}", "chapter", i, "x" * 50_000) for i in range(200)]
    calls = list(chunks(docs))
    assert sum(len(c) for c in calls) == 200
    assert all(len(c) <= 100 for c in calls)
    assert all(sum(len(d["content"]) for d in c) <= CHUNK_MAX_BYTES for c in calls)
    assert [d["slug"] for c in calls for d in c] == [f"s{i}" for i in range(200)]


def test_reading_stops_one_past_max_docs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for i in range(200):
        write(out / f"{i:03}_d.md", "x")
    reads = []
    real = results.read_regular_file
    monkeypatch.setattr(results, "read_regular_file", lambda *args: reads.append(args) or real(*args))
    with pytest.raises(InvalidOutput, match="more than 20 documents"):
        collect_documents([out], LIMITS)
    assert len(reads) == LIMITS.max_docs + 1


@pytest.mark.parametrize("text", ["_intro", "__init__", "-dash", ".hidden", "Ünïcode title", "", "a" * 300, "x/../y"])
def test_every_slug_is_one_worker_save_docs_accepts(text: str):
    # Regression: a leading "_" was kept, and worker:saveDocs refused the whole chunk.
    assert queue_rules.SLUG.match(slugify(text)), slugify(text)


def test_a_title_taken_from_the_file_name_is_cleaned_like_one_the_cli_wrote(tmp_path):
    write(tmp_path / "notes\x1b[31mred\x07.md", "no heading here\n")
    (doc,) = [d for d in collect_documents([tmp_path], LIMITS) if d.kind == "chapter"]
    assert doc.title == "notesred"
