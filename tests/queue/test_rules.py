"""One vocabulary: the queue's functions and the agent read the same rules.

queue/component/lib.ts imports queue/component/rules.json (and checks its typed status list against it
when it loads); the agent reads its copy, fondation_agent/queue/rules.json, which must not drift.
These tests also read lib.ts's exports through tsx, so a number written into lib.ts again fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from fondation_agent.queue import convex_api
from fondation_agent.queue import rules as queue_rules
from fondation_agent.queue.rules import ACTIVE_STATUSES, FINISHED_STATUSES, ErrorCode, ErrorKind, Status

ROOT = Path(__file__).resolve().parents[2]


def test_the_queue_functions_check_what_the_agent_checks():
    printed = subprocess.run(
        ["npx", "--no-install", "tsx", str(ROOT / "tests" / "fixtures" / "queue_rules.ts")],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    typescript = json.loads(printed)
    assert typescript.pop("ALL_STATUSES") == [status.value for status in Status]
    assert set(typescript.pop("ACTIVE_STATUSES")) == ACTIVE_STATUSES
    assert ErrorKind(typescript.pop("LEASE_EXPIRED"))
    typescript["DOC_KINDS"] = tuple(typescript["DOC_KINDS"])
    python = {name: getattr(queue_rules, name) for name in typescript}
    assert python == typescript


def test_the_agents_copy_of_the_rules_is_the_components_byte_for_byte():
    component, agent = ROOT / "queue" / "component" / "rules.json", ROOT / "fondation_agent" / "queue" / "rules.json"
    assert agent.read_bytes() == component.read_bytes(), f"the rules drifted: cp {component} {agent}"


def test_statuses_are_pending_active_or_finished():
    assert set(Status) == {Status.PENDING} | ACTIVE_STATUSES | FINISHED_STATUSES
    assert {"completed", "failed", "canceled"} == FINISHED_STATUSES


def test_every_error_code_has_its_exception_class():
    assert {code: convex_api._ERRORS_BY_CODE[code].code for code in ErrorCode} == {code: code for code in ErrorCode}


def test_every_error_kind_is_snake_case_and_documented():
    table = (ROOT / "docs" / "cli-contract.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    assert all(re.match(queue_rules.ERROR_KIND_PATTERN, kind) for kind in ErrorKind)
    assert documented == set(ErrorKind)


def test_bounded_counts_like_javascript():
    assert queue_rules.bounded("abc", 5) == "abc"
    cut = queue_rules.bounded("😀" * 300, 500)  # two UTF-16 units each
    assert queue_rules.js_length(cut) <= 500 and cut.endswith("…")
