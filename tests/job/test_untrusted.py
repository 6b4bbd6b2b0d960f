"""The bounded readers of untrusted output: YAML without aliases, scalars only, and nothing in job/
that prints a value whole."""

from __future__ import annotations

import ast
import datetime
import re
from pathlib import Path

import pytest

import fondation_agent.job
from fondation_agent.job.untrusted import YamlAliasRefused, load_yaml, scalar_text

JOB = Path(fondation_agent.job.__file__).parent


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: &x 1\nb: 2\n", 1), ("a: 1\nb: *x\n", 2), ("base: &b {k: v}\nother:\n  <<: *b\n", 1),
     ("- !!str &x text\n", 1)],
)
def test_yaml_anchors_and_aliases_are_refused_naming_the_file(text, line):
    with pytest.raises(YamlAliasRefused, match=rf"^step3_order\.yaml: YAML anchors and aliases are not allowed "
                                               rf"\(line {line}\)$"):
        load_yaml(text, "step3_order.yaml")


def test_yaml_without_aliases_loads_as_before():
    assert load_yaml("order:\n  - {index: 0, name: '&not an anchor'}\n", "f") == {
        "order": [{"index": 0, "name": "&not an anchor"}]}


@pytest.mark.parametrize(
    ("value", "shown"),
    [("\x1b[31mred\nline", "red line"), (3, "3"), (True, "True"), (None, "None"), (1.5, "1.5"),
     (datetime.date(2024, 1, 2), "2024-01-02"), ("x" * 50, "x" * 9 + "…"), ([1, 2], "a list"), ({"a": 1}, "a dict"),
     ({1, 2}, "a set")],
)
def test_scalar_text_shows_scalars_and_only_the_type_of_containers(value, shown):
    assert scalar_text(value, 10) == shown


def test_nothing_in_job_formats_a_value_with_repr():
    """repr() prints a container whole (a YAML alias bomb, expanded): job/ shows what it read from
    the CLI through clean_text or scalar_text, and to keep it so, repr has no use there at all."""
    found = []
    for module in sorted(JOB.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "repr")
                or (isinstance(node, ast.FormattedValue) and node.conversion == ord("r"))
                or (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.search(r"%r|!r\}", node.value))
            ):
                found.append(f"{module.name}:{node.lineno}")
    assert not found, f"repr, !r or %r in job/: {found}"
