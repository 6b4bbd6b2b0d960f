"""The demo course CLI (examples/course-cli): a real `node` subprocess on real git repositories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "examples" / "course-cli" / "cli.mjs"
NODE = shutil.which("node") or "node"  # required: a missing node fails these tests, never skips them
GIT = shutil.which("git") or "git"

STEPS = [
    "Extracting abstractions",
    "Analyzing relationships",
    "Determining order",
    "Generating chapters",
    "Reviewing chapters",
    "Creating tutorials",
]
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


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


def read_course(out: Path) -> dict[str, tuple[dict, str]]:
    """file name -> (front matter, body) for every Markdown file the CLI wrote."""
    course = {}
    for p in sorted(out.iterdir()):
        assert p.is_file() and not p.is_symlink(), p
        text = p.read_text()
        m = FRONT_MATTER.match(text)
        assert m, f"{p.name} has no front matter"
        course[p.name] = (yaml.safe_load(m.group(1)), text[m.end() :])
    return course


def chapter_paths(course: dict[str, tuple[dict, str]]) -> list[str]:
    """Module paths of the chapters, in chapter order."""
    chapters = sorted(
        (fm for fm, _ in course.values() if fm["kind"] == "chapter"), key=lambda fm: fm["chapterIndex"]
    )
    return [fm["title"].split(": ", 1)[1] for fm in chapters]


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


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


def test_progress_lines_files_and_front_matter(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli("analyze", py_repo, "--profile", "production", env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr

    progress = [line for line in r.stdout.splitlines() if line.startswith("[PROGRESS]")]
    assert progress == [f"[PROGRESS] Step {i}/6: {text}" for i, text in enumerate(STEPS, 1)]
    others = [line for line in r.stdout.splitlines() if not line.startswith("[PROGRESS]")]
    assert any(f"found {len(PY_MODULES)} modules" in line for line in others), r.stdout
    assert not any(re.search(r"Step \d+/\d+", line) for line in others)

    course = read_course(out)
    names = sorted(course)
    assert names[0] == "00_index.md"
    assert len(names) == 1 + len(PY_MODULES)  # index + one chapter per Python module
    for name, (fm, body) in course.items():
        assert set(fm) == {"title", "slug", "kind", "chapterIndex"}, name
        assert isinstance(fm["title"], str) and fm["title"]
        assert isinstance(fm["slug"], str) and re.fullmatch(r"[a-z0-9-]+", fm["slug"])
        assert fm["kind"] in ("index", "chapter")
        assert type(fm["chapterIndex"]) is int
        assert name.startswith(f"{fm['chapterIndex']:02d}_")
        assert body.strip()

    index_fm, index_body = course["00_index.md"]
    assert index_fm == {"title": "shop-repo: a course", "slug": "index", "kind": "index", "chapterIndex": 0}
    assert "A toy shop that sells widgets." in index_body  # README's first paragraph
    chapters = [(fm, body) for fm, body in course.values() if fm["kind"] == "chapter"]
    assert sorted(fm["chapterIndex"] for fm, _ in chapters) == list(range(1, len(PY_MODULES) + 1))
    assert len({fm["slug"] for fm, _ in chapters}) == len(PY_MODULES)
    for name, (fm, _) in course.items():
        if fm["kind"] == "chapter":
            assert re.fullmatch(r"Chapter \d+: .+", fm["title"])
            assert fm["title"].startswith(f"Chapter {fm['chapterIndex']}: ")
            assert f"]({name})" in index_body  # the index links every chapter

    assert sorted(chapter_paths(course)) == PY_MODULES

    # The money chapter: summary, definitions, who uses it, a fenced excerpt.
    money = next(body for fm, body in chapters if fm["title"].endswith(": shop/money.py"))
    assert "Money arithmetic in cents." in money
    assert "`add`" in money and "`Price`" in money and "`total`" in money
    used_by = money.split("**Used by:**", 1)[1].split("##", 1)[0]
    assert "shop/catalog.py" in used_by and "shop/cart.py" in used_by
    assert "```python\ndef add(a, b):" in money


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
    for name, (_, body) in course.items():
        assert secret_token not in body, name
        assert "leak.py" not in body.replace("import leak", ""), name
    assert secret_token not in r.stdout + r.stderr


def test_output_dir_from_env_and_default(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "course"  # parents are created
    r = run_cli("analyze", py_repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    assert (out / "00_index.md").is_file()
    default = py_repo / ".claude-tutorial-output"
    assert not default.exists()

    r = run_cli("analyze", py_repo, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert (default / "00_index.md").is_file()
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
    assert len(list(out.iterdir())) == 1 + len(PY_MODULES)


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


def test_prompt_appears_in_index(py_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prompt = "Explain the cart\n# not a heading <b>nor html</b>"
    r = run_cli("analyze", py_repo, f"--prompt={prompt}", env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 0, r.stderr
    _, index = read_course(out)["00_index.md"]
    assert "> Explain the cart" in index
    assert "<b>" not in index and "\n# not" not in index


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
    assert len(order) == 40 and len(course) == 41
    assert order[0] == "core.py"  # the most imported module is kept and comes first
    _, index = course["00_index.md"]
    assert "capped at 40 chapters" in index and "46 source modules" in index


def test_stale_chapters_from_an_earlier_run_are_removed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, {"a.py": "def a():\n    pass\n", "b.py": "import a\n"})
    git_commit(repo)
    out = tmp_path / "out"
    assert run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out))).returncode == 0
    (out / "notes.md").write_text("mine")
    (out / "07_mine.md").write_text("not written by the CLI")
    (repo / "b.py").unlink()
    assert run_cli("analyze", repo, env=clean_env(CLAUDE_OUTPUT_DIR=str(out))).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["00_index.md", "01_a.md", "07_mine.md", "notes.md"]


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
            if line.startswith("[PROGRESS]"):
                seen.append((line.strip(), proc.poll()))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [s for s, _ in seen] == [f"[PROGRESS] Step {i}/6: {t}" for i, t in enumerate(STEPS, 1)]
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
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run_cli(*args, env=clean_env(CLAUDE_OUTPUT_DIR=str(out)))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "usage:" in r.stderr
    assert "[PROGRESS]" not in r.stdout
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
    assert r.stderr.strip().splitlines()[-1].startswith("course-cli: error:")


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
    paths = chapter_paths(read_course(out))
    # Its chapters are the repository's own files, the most imported first chosen: which ones
    # depends on the tree, so only the kinds of files it must have read are pinned down.
    assert paths and all((ROOT / path).is_file() for path in paths), paths
    assert {Path(path).suffix for path in paths} >= {".py", ".ts"}, paths
