"""Progress read from the output directory of a CLI that prints nothing."""

from __future__ import annotations

import os
from pathlib import Path

from fondation_agent.job import untrusted
from fondation_agent.job.progress_watch import _OrderLength, observe


def seen(directory: Path) -> tuple[int, str] | None:
    progress = observe(directory, _OrderLength())
    return None if progress is None else (progress.step, progress.text)


def test_each_step_leaves_a_mark(tmp_path):
    out = tmp_path / "out"
    assert seen(out) is None
    out.mkdir()
    assert seen(out) == (1, "Extracting abstractions")
    (out / "step1_abstractions.yaml").write_text("[]")
    assert seen(out) == (2, "Analyzing relationships")
    (out / "step2_relationships.yaml").write_text("{}")
    assert seen(out) == (3, "Determining order")
    (out / "step3_order.yaml").write_text("order:\n  - {index: 0, name: A}\n  - {index: 1, name: B}\n")
    assert seen(out) == (4, "Generating chapters")
    (out / "chapters").mkdir()
    (out / "chapters" / "chapter_0_a.md").write_text("# A")
    assert seen(out) == (4, "Generating chapters (1 of 2 written)")
    (out / "reviewed-chapters").mkdir()
    assert seen(out) == (5, "Reviewing chapters (0 of 2 reviewed)")
    (out / "tutorials").mkdir()
    for name in ("tutorial_0_a.md", "tutorial_1_b.md"):
        (out / "tutorials" / name).write_text("# T")
    assert seen(out) == (6, "Creating tutorials (2 of 2 written)")


def test_links_and_broken_order_files_are_not_followed(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (elsewhere / "chapters").mkdir(parents=True)
    out.mkdir()
    (out / "step1_abstractions.yaml").symlink_to("/etc/passwd")
    assert seen(out) == (1, "Extracting abstractions"), "a link is no mark"
    (out / "step3_order.yaml").write_text("order: [unclosed")
    (out / "tutorials").symlink_to(elsewhere / "chapters")
    (out / "chapters").mkdir()
    os.mkfifo(out / "chapters" / "chapter_1_x.md")
    assert seen(out) == (4, "Generating chapters (0 written)")
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    assert seen(linked) is None


def test_a_directory_too_full_to_list_shows_no_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(untrusted, "MAX_DIRECTORY_ENTRIES", 3)
    (tmp_path / "chapters").mkdir()
    for i in range(3):
        (tmp_path / "chapters" / f"chapter_{i}_x.md").write_text("# X")
    assert seen(tmp_path) == (4, "Generating chapters (3 written)")
    (tmp_path / "chapters" / "chapter_3_x.md").write_text("# X")
    assert seen(tmp_path) is None, "not listed past the cap (collecting the documents will say why)"
