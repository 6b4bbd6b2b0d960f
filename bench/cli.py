#!/usr/bin/env python3
"""The bench's stand-in for the Fondation CLI: no progress lines, no LLM, exits as soon as it has written.

Usage: cli.py REPO OUTPUT MODE — the mode comes from the job's prompt:
  instant            one small Markdown document (01_bench.md), then exit 0
  docs:N:SIZE        N Markdown documents of SIZE bytes each (front matter included), then exit 0
  sleep:S            a job that stays running: sleeps S seconds, then as instant

Stdlib only and imported by nothing, so the agent's `python -I -S bench/cli.py …` starts fast.
"""

import sys
import time
from pathlib import Path


def document(index: int, size: int) -> str:
    head = (f"---\ntitle: Bench document {index}\nslug: bench-{index:04d}\nchapterIndex: {index}\n---\n"
            f"# Document {index}\n")
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\n"
    body_bytes = max(0, size - len(head))
    body = (line * (body_bytes // len(line) + 1))[:body_bytes]
    return head + body


def main() -> int:
    if sys.argv[1:] == ["--version"]:  # the agent's preflight
        print("bench-cli 1.0.0")
        return 0
    output, mode = Path(sys.argv[2]), sys.argv[3]  # the repository (argv[1]) is not read
    if mode.startswith("sleep:"):
        time.sleep(float(mode.split(":")[1]))
        mode = "instant"
    if mode == "instant":
        (output / "01_bench.md").write_text("# Bench\nA job that ends at once.\n")
        return 0
    if mode.startswith("docs:"):
        _, count, size = mode.split(":")
        for index in range(int(count)):
            (output / f"{index:04d}_bench.md").write_text(document(index, int(size)))
        return 0
    print(f"bench cli: unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
