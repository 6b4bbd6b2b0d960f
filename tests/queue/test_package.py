"""The queue installs like any Convex component: `npm pack` in queue/ makes a tarball that a host app
installs and type-checks against (tests/fixtures/scratch_app: the client calls a platform makes).

Offline: the tarball is installed from its file with no registry, and the app's other packages
(convex, convex-test, vite's types) are the repository's own node_modules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRATCH_APP = ROOT / "tests" / "fixtures" / "scratch_app"
# What the scratch app imports besides the package: the peers a platform's app already has.
PEERS = ("convex", "convex-test", "vite", "vitest")


def _run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _pack(into: Path) -> Path:
    packed = json.loads(_run(["npm", "pack", "--json", "--pack-destination", str(into)], ROOT / "queue"))
    return into / packed[0]["filename"]


def test_the_tarball_holds_the_component_and_client_but_no_tests(tmp_path: Path):
    with tarfile.open(_pack(tmp_path)) as tarball:
        names = set(tarball.getnames())
    assert {"package/component/convex.config.ts", "package/client/index.ts", "package/test.ts",
            "package/component/rules.json"} <= names
    assert not [name for name in names if name.endswith(".test.ts")]


def _scratch_app(tmp_path: Path) -> Path:
    """The scratch app with the packed tarball installed (npm install ./….tgz) and its peers linked."""
    tarball = _pack(tmp_path)
    app = tmp_path / "app"
    shutil.copytree(SCRATCH_APP, app)
    _run(["npm", "install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps",
          str(tarball)], app)
    for peer in PEERS:
        (app / "node_modules" / peer).symlink_to(ROOT / "node_modules" / peer)
    return app


def _type_check(app: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", "."], cwd=app,
                          capture_output=True, text=True, timeout=300)


def test_a_scratch_app_installs_the_tarball_and_type_checks_against_it(tmp_path: Path):
    app = _scratch_app(tmp_path)
    installed = app / "node_modules" / "@fondation-agent" / "queue"
    assert json.loads((installed / "package.json").read_text())["name"] == "@fondation-agent/queue"
    assert not installed.is_symlink()  # a copy of the tarball's files, not the repository's queue/
    checked = _type_check(app)
    assert checked.returncode == 0, checked.stdout


def test_a_type_error_against_the_package_fails_the_check(tmp_path: Path):
    """The check above can fail: a call the client does not have is refused by tsc."""
    app = _scratch_app(tmp_path)
    (app / "convex" / "wrong.ts").write_text(
        'import { FondationQueue } from "@fondation-agent/queue";\n'
        "export const wrong = (queue: FondationQueue) => queue.noSuchCall();\n")
    checked = _type_check(app)
    assert checked.returncode != 0 and "noSuchCall" in checked.stdout
