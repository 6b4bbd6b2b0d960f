"""The demo course CLI (examples/course-cli): a real `node` subprocess on real git repositories."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fondation_agent.job.cli_contract import STEPS
from fondation_agent.job.cli_output import read_cli_line

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "examples" / "course-cli" / "cli.mjs"
NODE = shutil.which("node") or "node"  # required: a missing node fails these tests, never skips them
GIT = shutil.which("git") or "git"



# --- helpers ---------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_OUTPUT_DIR", "COURSE_CLI_STEP_DELAY_MS")}
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NODE, str(CLI), *map(str, args)],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def git_commit(repo: Path) -> None:
    git = [GIT, "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([GIT, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "init"], check=True)


def read_course(out: Path) -> dict[str, dict]:
    """The real CLI's layout: the three YAML files (parsed) and the Markdown of each directory."""
    course: dict[str, dict] = {}
    for name in ("step1_abstractions", "step2_relationships", "step3_order"):
        course[name] = yaml.safe_load((out / f"{name}.yaml").read_text())
    for directory in ("chapters", "reviewed-chapters", "tutorials"):
        files = sorted((out / directory).iterdir())
        assert all(p.is_file() and not p.is_symlink() and p.suffix == ".md" for p in files), files
        course[directory] = {p.name: p.read_text() for p in files}
    return course


def chapter_paths(course: dict[str, dict]) -> list[str]:
    """Module paths of the chapters, in chapter order (step3_order.yaml)."""
    return [item["name"] for item in course["step3_order"]["order"]]


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def pino_lines(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert all({"level", "time", "pid", "hostname", "msg"} <= set(line) for line in lines), lines
    return lines


PY_FILES = {
    "README.md": "# Shop\n\n[![ci](https://example.com/b.svg)](https://example.com)\n\n"
    "A toy shop that sells\nwidgets.\n\n## Install\n\nNothing.\n",
    "shop/__init__.py": '"""The shop package."""\n',
    "shop/money.py": '"""Money arithmetic in cents."""\n\n\ndef add(a, b):\n    return a + b\n\n\n'
    "class Price:\n    def __init__(self, cents):\n        self.cents = cents\n\n    def total(self):\n"
    "        return self.cents\n",
    "shop/catalog.py": '"""The catalog of widgets."""\nfrom .money import Price\n\n\nclass Catalog:\n'
    "    def price(self, name):\n        return Price(100)\n",
    "shop/cart.py": "# The cart: what the customer is buying.\nfrom shop.catalog import Catalog\n"
    "from shop import money\n\n\ndef checkout(items):\n    return money.add(0, len(items))\n",
    "main.py": '#!/usr/bin/env python3\n"""Command line entry point."""\nimport shop.cart\n\n\n'
    "def main():\n    return shop.cart.checkout([])\n",
    "zz_util.py": '"""A helper nobody imports."""\n\n\ndef helper():\n    pass\n',
}
PY_MODULES = sorted(p for p in PY_FILES if p.endswith(".py"))
# who imports whom, in repository paths
PY_IMPORTS = {
    "shop/catalog.py": ["shop/money.py"],
    "shop/cart.py": ["shop/catalog.py", "shop/money.py"],
    "main.py": ["shop/cart.py"],
}


@pytest.fixture
def py_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "shop-repo"
    write(repo, PY_FILES)
    git_commit(repo)
    return repo


# --- the contract ----------------------------------------------------------------------------


def test_json_log_steps_and_the_real_layout(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("analyze", py_repo, "--profile", "production", env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""

    lines = pino_lines(r.stdout)
    steps = [line for line in lines if line["msg"].startswith("[FONDATION_STEP_")]
    assert [line["msg"] for line in steps] == [f"[FONDATION_STEP_{i}/6] {text}" for i, text in enumerate(STEPS, 1)]
    assert [line["step"] for line in steps] == [f"{i}/6" for i in range(1, 7)]
    assert all(line["level"] == 30 for line in lines)
    others = [line["msg"] for line in lines if line not in steps]
    assert not any(re.search(r"Step \d+/\d+|\[\d+/\d+\]", msg) for msg in others)
    parsed = [read_cli_line(raw).progress for raw in r.stdout.splitlines()]
    assert [(p.step, p.text) for p in parsed if p] == list(enumerate(STEPS, 1)), "the agent reads these steps"

    course = read_course(out)
    assert sorted(chapter_paths(course)) == PY_MODULES
    abstractions = course["step1_abstractions"]
    assert [a["name"] for a in abstractions] == chapter_paths(course)
    assert all(a["file_paths"] == [a["name"]] and a["description"] for a in abstractions)
    assert [item["index"] for item in course["step3_order"]["order"]] == list(range(len(PY_MODULES)))
    relationships = course["step2_relationships"]
    assert "A toy shop that sells widgets." in relationships["summary"]  # README's first paragraph
    names = chapter_paths(course)
    imports = {(names[r["from_abstraction"]], names[r["to_abstraction"]]) for r in relationships["relationships"]}
    assert imports == {(module, dep) for module, deps in PY_IMPORTS.items() for dep in deps}

    chapters, reviewed, tutorials = course["chapters"], course["reviewed-chapters"], course["tutorials"]
    assert len(chapters) == len(reviewed) == len(tutorials) == len(PY_MODULES)
    assert sorted(reviewed) == sorted(f"reviewed_{name}" for name in chapters)
    for name, body in chapters.items():
        index = int(re.fullmatch(r"chapter_(\d+)_[a-z0-9-]+\.md", name)[1])
        assert f"\n# Chapter {index}: {names[index - 1]}\n" in body.replace("\\_", "_")
        assert not body.startswith("---"), "no front matter, like the real CLI"
        assert f"tutorial_{index}_" + name.split("_", 2)[2] in tutorials
        assert reviewed[f"reviewed_{name}"].startswith(body.replace("](chapter_", "](reviewed_chapter_"))

    # The money chapter: summary, definitions, who uses it, a fenced excerpt.
    money = next(body for body in chapters.values() if ": shop/money.py\n" in body)
    assert "Money arithmetic in cents." in money
    assert "`add`" in money and "`Price`" in money and "`total`" in money
    used_by = money.split("**Used by:**", 1)[1].split("##", 1)[0]
    assert "shop/catalog.py" in used_by and "shop/cart.py" in used_by
    assert "```python\ndef add(a, b):" in money


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("tty", [f"[{i}/6] {phase}: {text}" for i, (phase, text) in enumerate(zip(
            ["Extract", "Analyze", "Order", "Generate", "Review", "Tutorials"], STEPS, strict=True), 1)]),
        ("progress", [f"[PROGRESS] Step {i}/6: {text}" for i, text in enumerate(STEPS, 1)]),
        ("silent", []),
    ],
)
def test_the_other_log_forms_write_the_same_course(py_repo: Path, tmp_path: Path, form: str, expected) -> None:
    reference, out = tmp_path / "json", tmp_path / form
    assert run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(reference))).returncode == 0
    r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out), COURSE_CLI_LOG=form))
    assert r.returncode == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if read_cli_line(line).progress]
    assert steps == expected
    if form == "silent":
        assert r.stdout == r.stderr == ""
    assert snapshot(out) == snapshot(reference)


def test_an_unknown_log_form_is_a_usage_error(py_repo: Path) -> None:
    r = run_cli("analyze", py_repo, env=clean_env(COURSE_CLI_LOG="xml"))
    assert r.returncode == 2 and "COURSE_CLI_LOG" in r.stderr


def test_chapter_order_follows_imports(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    order = chapter_paths(read_course(out))
    for module, deps in PY_IMPORTS.items():
        for dep in deps:
            assert order.index(dep) < order.index(module), (dep, module, order)
    # ties are broken by path: nothing imports shop/__init__.py, it has no imports, and it sorts first
    assert order[0] == "shop/__init__.py"


def test_js_imports_and_cycles(tmp_path: Path) -> None:
    repo = tmp_path / "web"
    write(
        repo,
        {
            "src/app.ts": 'import { util } from "./lib/util.js";\nimport b from "./b";\n'
            "export function app() {}\n",
            "src/lib/util.ts": "/** Utilities. */\nexport const util = () => 1;\n",
            "src/a.js": 'const b = require("./b");\nfunction a() {}\nmodule.exports = a;\n',
            "src/b.js": 'import a from "./a.js";\nexport default function b() {}\n',
            "node_modules/dep/index.js": "// vendored, never read\nexport function dep() {}\n",
            "dist/bundle.js": "export function bundled() {}\n",
        },
    )
    git_commit(repo)
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    for out in (out1, out2):
        r = run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
        assert r.returncode == 0, r.stderr
    assert snapshot(out1) == snapshot(out2)
    order = chapter_paths(read_course(out1))
    assert sorted(order) == ["src/a.js", "src/app.ts", "src/b.js", "src/lib/util.ts"]
    assert order.index("src/lib/util.ts") < order.index("src/app.ts")  # "./lib/util.js" names the .ts file
    assert order.index("src/b.js") < order.index("src/app.ts")
    # a.js and b.js import each other: the cycle is broken by path, a.js first
    assert order.index("src/a.js") < order.index("src/b.js")


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    secret_token = "SECRET_TOKEN_7c1f2e"
    outside = tmp_path / "outside"
    write(
        outside,
        {
            "secret.py": f'"""{secret_token}"""\nSECRET = "{secret_token}"\n',
            "pkg/inner.py": f"# {secret_token}\n",
        },
    )
    repo = tmp_path / "repo"
    write(repo, {"real.py": '"""A real module."""\nimport leak\n'})
    (repo / "leak.py").symlink_to(outside / "secret.py")
    (repo / "linked").symlink_to(outside / "pkg", target_is_directory=True)
    (repo / "README.md").symlink_to(outside / "secret.py")
    git_commit(repo)

    out = tmp_path / "out"
    r = run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    course = read_course(out)
    assert chapter_paths(course) == ["real.py"]
    for name, body in snapshot(out).items():
        assert secret_token.encode() not in body, name
        assert b"leak.py" not in body.replace(b"import leak", b""), name
    assert secret_token not in r.stdout + r.stderr


def test_output_dir_from_env_and_default(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "course"  # parents are created
    r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    assert (out / "step1_abstractions.yaml").is_file()
    default = py_repo / ".claude-tutorial-output"
    assert not default.exists()

    r = run_cli("analyze", py_repo, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert (default / "step1_abstractions.yaml").is_file()
    assert snapshot(default) == snapshot(out)
    # a second run skips its own output dir: it does not become part of the course
    r = run_cli("analyze", py_repo, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert snapshot(default) == snapshot(out)


def test_output_inside_repo_is_not_analyzed(py_repo: Path) -> None:
    out = py_repo / "course_out"
    for _ in range(2):
        r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
        assert r.returncode == 0, r.stderr
    assert sorted(chapter_paths(read_course(out))) == PY_MODULES


def test_deterministic_output(py_repo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        r = run_cli(
            "analyze", py_repo, "--prompt", "Focus on money", env=clean_env(CLAUDE_OUTPUT_DIR=str(out))
        )
        assert r.returncode == 0, r.stderr
    assert snapshot(a) == snapshot(b)
    # a clone at another path is the same repository
    clone = tmp_path / "clone" / "shop-repo"
    subprocess.run([GIT, "clone", "-q", str(py_repo), str(clone)], check=True)
    c = tmp_path / "c"
    r = run_cli("analyze", clone, "--prompt", "Focus on money", env=clean_env(CLAUDE_OUTPUT_DIR=str(c)))
    assert r.returncode == 0, r.stderr
    assert snapshot(c) == snapshot(a)


def test_prompt_appears_in_the_relationships_summary(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prompt = "Explain the cart\n# and\tmore"
    r = run_cli("analyze", py_repo, f"--prompt={prompt}", env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    assert read_course(out)["step2_relationships"]["summary"].endswith("Focus requested: Explain the cart # and more")


def test_skips_vendored_hidden_binary_large_and_empty_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(
        repo,
        {
            "ok.py": "def ok():\n    pass\n",
            ".hidden/h.py": "def hidden():\n    pass\n",
            ".venv/lib/v.py": "def venv():\n    pass\n",
            "venv/v.py": "def venv():\n    pass\n",
            "node_modules/m/index.js": "export function m() {}\n",
            "build/b.py": "def built():\n    pass\n",
            "pkg/__pycache__/c.py": "def cached():\n    pass\n",
            "pkg/__init__.py": "",  # empty: no chapter
            "blank.py": "\n\n",
            "big.py": "# big\n" + "x = 1\n" * 200_000,
        },
    )
    (repo / "blob.py").write_bytes(b"def blob():\n    pass\n\x00\x01\x02")
    (repo / "latin1.py").write_bytes(b"# caf\xe9\n")
    git_commit(repo)
    out = tmp_path / "out"
    r = run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    assert chapter_paths(read_course(out)) == ["ok.py"]


def test_chapters_are_capped_at_40(tmp_path: Path) -> None:
    repo = tmp_path / "many"
    files = {"core.py": '"""Everyone uses me."""\n\ndef core():\n    pass\n'}
    for i in range(45):
        files[f"m{i:02d}.py"] = (
            f'"""Module {i}."""\n' + ("import core\n" if i % 2 else "") + f"\ndef f{i}():\n    pass\n"
        )
    write(repo, files)
    git_commit(repo)
    out = tmp_path / "out"
    r = run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    course = read_course(out)
    order = chapter_paths(course)
    assert len(order) == 40 and len(course["chapters"]) == len(course["tutorials"]) == 40
    assert order[0] == "core.py"  # the most imported module is kept and comes first
    assert any(line["msg"] == "capped the course at 40 chapters (46 non-empty modules)"
               for line in pino_lines(r.stdout))


def test_stale_chapters_from_an_earlier_run_are_removed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, {"a.py": "def a():\n    pass\n", "b.py": "import a\n"})
    git_commit(repo)
    out = tmp_path / "out"
    assert run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out))).returncode == 0
    (out / "chapters" / "notes.md").write_text("mine")
    (out / "chapters" / "chapter_7_mine.md").write_text("not written by the CLI")
    (repo / "b.py").unlink()
    assert run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out))).returncode == 0
    assert sorted(p.name for p in (out / "chapters").iterdir()) == ["chapter_1_a.md", "chapter_7_mine.md", "notes.md"]
    assert sorted(p.name for p in (out / "tutorials").iterdir()) == ["tutorial_1_a.md"]


def test_progress_is_streamed_live(py_repo: Path, tmp_path: Path) -> None:
    env = clean_env(CLAUDE_OUTPUT_DIR=str(tmp_path / "out"), COURSE_CLI_STEP_DELAY_MS="400")
    started = time.monotonic()
    proc = subprocess.Popen(
        [NODE, str(CLI), "analyze", str(py_repo)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            if "FONDATION_STEP_" in line:
                seen.append((json.loads(line)["msg"], proc.poll()))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [s for s, _ in seen] == [f"[FONDATION_STEP_{i}/6] {t}" for i, t in enumerate(STEPS, 1)]
    assert seen[0][1] is None  # step 1 arrived while the CLI was still running
    assert time.monotonic() - started >= 5 * 0.4


# --- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["analyze"],
        ["frobnicate", "."],
        ["analyze", "/nonexistent/repo/for/sure"],
        ["analyze", ".", "--profile"],
        ["analyze", ".", "--bogus"],
        ["analyze", ".", "--engine", "gpt"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(*args, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage:" in r.stderr
    assert "FONDATION_STEP" not in r.stdout
    assert not out.exists()


def test_missing_repo_names_it(tmp_path: Path) -> None:
    r = run_cli("analyze", tmp_path / "nope")
    assert r.returncode == 2
    assert "nope" in r.stderr


def test_repo_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert run_cli("analyze", f).returncode == 2


def test_unwritable_output_is_an_error(py_repo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(blocker / "out")))
    assert r.returncode == 1
    assert r.stderr == "", "like the real CLI, the failure is logged on stdout"
    failure = pino_lines(r.stdout)[-1]
    assert (failure["level"], failure["msg"]) == (50, "Analysis failed")
    assert "ENOTDIR" in failure["error"] and failure["stack"]


def test_default_output_dir_symlink_is_refused(py_repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (py_repo / ".claude-tutorial-output").symlink_to(target, target_is_directory=True)
    r = run_cli("analyze", py_repo)
    assert r.returncode == 1
    assert list(target.iterdir()) == []


def test_runs_on_this_repository(tmp_path: Path) -> None:
    """The CLI reads its own repository without trouble (the demo does exactly this)."""
    out = tmp_path / "out"
    r = run_cli("analyze", ROOT, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    course = read_course(out)
    paths = chapter_paths(course)
    # Its chapters are the repository's own files, the most imported first chosen: which ones
    # depends on the tree, so only the kinds of files it must have read are pinned down.
    assert paths and all((ROOT / path).is_file() for path in paths), paths
    assert {Path(path).suffix for path in paths} >= {".py", ".ts"}, paths
    assert len(course["chapters"]) == len(course["reviewed-chapters"]) == len(course["tutorials"]) == len(paths)
