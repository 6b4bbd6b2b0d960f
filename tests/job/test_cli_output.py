"""The CLI's stdout lines: pino JSON and plain text, made readable, leveled and safe."""

from __future__ import annotations

import json

import pytest

from fondation_agent.job.cli_output import read_cli_line


def pino(level: int, msg: str, **fields) -> str:
    return json.dumps({"level": level, "time": 1733140000000, "pid": 7, "hostname": "h", "msg": msg, **fields})


def test_a_progress_line_of_the_real_cli():
    line = read_cli_line(pino(30, "[FONDATION_STEP_2/6] Analyzing relationships between components",
                              step="2/6", phase="Analyze"))
    assert line.level == "info"
    assert line.text == "[FONDATION_STEP_2/6] Analyzing relationships between components step=2/6 phase=Analyze"
    assert (line.progress.step, line.progress.total) == (2, 6)
    assert line.error is None


def test_an_error_logged_on_stdout_carries_its_error():
    line = read_cli_line(pino(50, "Analysis failed", error="Invalid API key", stack="Error: x\n    at y (z.js:1)"))
    assert line.level == "error"
    assert line.error == "Analysis failed: Invalid API key"
    assert line.text == 'Analysis failed error="Invalid API key" stack="Error: x at y (z.js:1)"'
    assert "\n" not in line.text


@pytest.mark.parametrize(
    ("level", "expected"),
    [(10, "debug"), (20, "debug"), (30, "info"), (40, "warning"), (50, "error"), (60, "critical"),
     ("warn", "warning"), ("fatal", "critical"), (True, "info"), ("nonsense", "info")],
)
def test_pino_levels(level, expected):
    assert read_cli_line(json.dumps({"level": level, "msg": "m"})).level == expected


def test_escape_sequences_and_controls_are_stripped():
    line = read_cli_line("\x1b[31mred\x1b[0m \x1b]0;title\x07bell\x07 \u202eevil\r\nforged")
    assert line.text == "red bell evil forged"
    assert read_cli_line(pino(30, "\x1b[2Jcleared", note="\x1b[1mbold")).text == "cleared note=bold"


def test_fields_cannot_pose_as_the_agents_own():
    # The CLI's fields are text in the message, never journal fields: it cannot set JOB_ID.
    line = read_cli_line(pino(30, "hi", job_id="someone-else", nested={"a": [1, 2]}))
    assert line.text == "hi job_id=someone-else nested=" + json.dumps(json.dumps({"a": [1, 2]}))


def test_plain_and_broken_lines_are_text():
    assert read_cli_line("Step 3/6: Determining order").progress.step == 3
    line = read_cli_line('{"not": "pino"')
    assert (line.text, line.level, line.progress) == ('{"not": "pino"', "info", None)
    assert read_cli_line("[" * 100_000).text.endswith("…")
    deep = "{" + '"a":[' * 100_000 + "]" * 100_000 + "}"
    assert read_cli_line(deep).level == "info"


HUGE = "1" + "0" * 4000  # a number json.loads reads, too large for a float


@pytest.mark.parametrize(
    ("level", "expected"),
    [("NaN", "info"), ("Infinity", "info"), ("-Infinity", "info"), ("1e400", "info"), (HUGE, "critical"),
     (f"-{HUGE}", "debug"), ("45.5", "warning"), ("-3", "debug"), ("false", "info"), ('["error"]', "info")],
)
def test_any_json_value_is_a_level(level, expected):
    # Regression: NaN raised in the relay thread, which then stopped draining the CLI's stdout.
    assert read_cli_line(f'{{"level": {level}, "msg": "m"}}').level == expected


ODD_VALUES = [None, True, 0, -1, 2**63, int(HUGE), 1.5, 1e308, float("nan"), float("inf"), float("-inf"), "",
              "\ud800", "\x1b[2J", "x" * 100_000, [], {}, [None, [1, {"a": [float("nan")]}]],
              {"message": {"message": 1}}, {"message": float("inf")}, [[[[[]]]]] * 1000]


@pytest.mark.parametrize("value", ODD_VALUES, ids=range(len(ODD_VALUES)))
def test_no_json_value_makes_reading_a_line_raise(value):
    key = value if isinstance(value, str) else "k"
    for record in ({"level": value, "msg": "m"}, {"level": 50, "msg": value, "error": value},
                   {"level": "error", "msg": "m", "err": value, key: value}):
        line = read_cli_line(json.dumps(record))
        assert line.level in ("debug", "info", "warning", "error", "critical")
        for text in (line.text, line.error or ""):
            assert len(text) <= 2000 and "\n" not in text and "\x1b" not in text
            text.encode()  # no lone surrogate: every stream the journal line goes to would refuse it
