"""The CLI's recent lines kept for the next heartbeat (the platform's live logs): bounded, in order."""

from __future__ import annotations

from fondation_agent.job.log_tail import LogTail
from fondation_agent.queue.rules import MAX_LOG_BYTES, MAX_LOG_LINE_LENGTH, MAX_LOG_LINES


def test_take_returns_the_unsent_lines_oldest_first_once():
    tail = LogTail()
    tail.add("info", "[1/6] Extract")
    tail.add("error", "it failed")
    assert tail.take() == [{"level": "info", "text": "[1/6] Extract"}, {"level": "error", "text": "it failed"}]
    assert tail.take() == []


def test_the_oldest_lines_give_way_past_the_line_bound():
    tail = LogTail()
    for i in range(MAX_LOG_LINES + 5):
        tail.add("info", f"line {i}")
    taken = tail.take()
    assert len(taken) == MAX_LOG_LINES
    assert taken[0]["text"] == "line 5" and taken[-1]["text"] == f"line {MAX_LOG_LINES + 4}"


def test_the_oldest_lines_give_way_past_the_byte_bound_and_long_lines_are_cut():
    tail = LogTail()
    for i in range(100):
        tail.add("info", f"{i} " + "é" * (MAX_LOG_LINE_LENGTH * 2))
    taken = tail.take()
    assert all(len(line["text"]) <= MAX_LOG_LINE_LENGTH for line in taken)
    assert sum(len(line["text"].encode()) for line in taken) <= MAX_LOG_BYTES
    assert taken[-1]["text"].startswith("99 ") and len(taken) < 100


def test_lines_put_back_after_a_failed_heartbeat_come_before_newer_ones_within_the_bounds():
    tail = LogTail(max_lines=3)
    tail.add("info", "a")
    tail.add("info", "b")
    unsent = tail.take()
    tail.add("info", "c")
    tail.add("info", "d")
    tail.put_back(unsent)
    assert [line["text"] for line in tail.take()] == ["b", "c", "d"]  # "a", the oldest, gave way
