"""The agent's copy of the queue's limits matches queue/component/lib.ts (read through tsx, not parsed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fondation_agent import queue_limits

ROOT = Path(__file__).resolve().parent.parent


def test_python_limits_match_the_typescript_ones():
    printed = subprocess.run(
        ["npx", "--no-install", "tsx", str(ROOT / "tests" / "fixtures" / "queue_limits.ts")],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    typescript = json.loads(printed)
    python = {name: getattr(queue_limits, name) for name in typescript}
    assert python == typescript


def test_bounded_counts_like_javascript():
    assert queue_limits.bounded("abc", 5) == "abc"
    cut = queue_limits.bounded("😀" * 300, 500)  # two UTF-16 units each
    assert queue_limits.js_length(cut) <= 500 and cut.endswith("…")
