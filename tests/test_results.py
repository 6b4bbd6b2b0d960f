"""Reading the CLI's output: documents, defaults, limits, and nothing outside the directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fondation_agent import results
from fondation_agent.results import (
    CHUNK_MAX_BYTES,
    Document,
    InvalidOutput,
    Limits,
    chunks,
    collect_documents,
    remove_shipped_output,
)

LIMITS = Limits(max_doc_bytes=10_000, max_docs=20, max_total_bytes=50_000)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_front_matter_and_defaults(tmp_path):
    front_matter = "---\ntitle: The course\nslug: index\nkind: index\nchapterIndex: 0\n---\n"
    write(tmp_path / "00_index.md", front_matter + "# Ignored\n")
    write(tmp_path / "02_second.md", "# Second chapter\nbody\n")
    write(tmp_path / "notes.md", "no heading here\n")
    write(tmp_path / "image.png", "not markdown")
    docs = collect_documents([tmp_path], LIMITS)
    assert [(d.chapter_index, d.slug, d.title, d.kind) for d in docs] == [
        (0, "index", "The course", "index"),
        (2, "02_second", "Second chapter", "chapter"),
        (2, "notes", "notes", "chapter"),  # no leading number: its position among the files
    ]
    assert docs[0].content == "# Ignored\n", "front matter is not part of the stored content"


def test_the_first_directory_with_documents_wins(tmp_path):
    empty, fallback = tmp_path / "output", tmp_path / "repo" / ".claude-tutorial-output"
    empty.mkdir()
    write(fallback / "01_a.md", "# A\n")
    assert [d.slug for d in collect_documents([empty, fallback], LIMITS)] == ["01_a"]
    with pytest.raises(InvalidOutput, match="wrote no Markdown documents"):
        collect_documents([empty, tmp_path / "missing"], LIMITS)


def test_symlinks_are_never_followed(tmp_path):
    secret = write(tmp_path / "secret" / "token.md", "TOP SECRET")
    out = tmp_path / "out"
    write(out / "01_real.md", "# Real\n")
    (out / "02_link.md").symlink_to(secret)
    (out / "linked-dir").symlink_to(secret.parent)
    docs = collect_documents([out], LIMITS)
    assert [d.slug for d in docs] == ["01_real"]
    linked_output = tmp_path / "linked-output"
    linked_output.symlink_to(secret.parent)
    with pytest.raises(InvalidOutput, match="cannot be opened safely"):
        collect_documents([linked_output], LIMITS)


def test_fifos_and_devices_are_skipped_without_blocking(tmp_path):
    write(tmp_path / "01_a.md", "# A\n")
    os.mkfifo(tmp_path / "02_fifo.md")
    assert [d.slug for d in collect_documents([tmp_path], LIMITS)] == ["01_a"]


def test_subdirectories_are_read_to_a_bounded_depth(tmp_path):
    write(tmp_path / "part1" / "01_a.md", "# A\n")
    write(tmp_path / "a" / "b" / "c" / "d" / "e" / "deep.md", "# too deep\n")
    assert [d.slug for d in collect_documents([tmp_path], LIMITS)] == ["part1-01_a"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"01_big.md": "x" * 10_001}, "01_big.md is 10001 bytes; a document may be at most 10000 bytes"),
        ({f"{i:02}_d.md": "x" * 9_000 for i in range(6)}, "more than 50000 bytes of Markdown"),
        ({f"{i:02}_d.md": "x" for i in range(21)}, "wrote more than 20 documents"),
        ({"01_a.md": "---\ntitle: [unclosed\n---\n"}, "front matter is not valid YAML"),
        ({"01_a.md": "---\n- a list\n---\n"}, "front matter must be a mapping"),
        ({"01_a.md": "---\nchapterIndex: -1\n---\n"}, "chapterIndex must be a whole number"),
        ({"01_a.md": "---\nslug: same\n---\n", "02_b.md": "---\nslug: same\n---\n"}, "share the slug 'same'"),
    ],
)
def test_invalid_output_is_a_clear_error(tmp_path, files, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(InvalidOutput, match=message.replace("[", r"\[")):
        collect_documents([tmp_path], LIMITS)


def test_chunks_stay_under_convex_limits():
    docs = [Document(f"t{i}", f"s{i}", "chapter", i, "x" * 50_000) for i in range(200)]
    calls = list(chunks(docs))
    assert sum(len(c) for c in calls) == 200
    assert all(len(c) <= 100 for c in calls)
    assert all(sum(len(d["content"]) for d in c) <= CHUNK_MAX_BYTES for c in calls)
    assert [d["slug"] for c in calls for d in c] == [f"s{i}" for i in range(200)]


def test_a_shipped_output_directory_or_link_is_removed(tmp_path):
    write(tmp_path / ".claude-tutorial-output" / "01.md", "planted")
    assert remove_shipped_output(tmp_path)
    assert not (tmp_path / ".claude-tutorial-output").exists()
    (tmp_path / ".claude-tutorial-output").symlink_to("/etc")
    assert remove_shipped_output(tmp_path)
    assert not (tmp_path / ".claude-tutorial-output").is_symlink()
    assert not remove_shipped_output(tmp_path)


def test_reading_stops_one_past_max_docs(tmp_path, monkeypatch):
    out = tmp_path / "out"
    for i in range(200):
        write(out / f"{i:03}_d.md", "x")
    reads = []
    real = results._read_regular_file
    monkeypatch.setattr(results, "_read_regular_file", lambda *args: reads.append(args) or real(*args))
    with pytest.raises(InvalidOutput, match="more than 20 documents"):
        collect_documents([out], LIMITS)
    assert len(reads) == LIMITS.max_docs + 1
