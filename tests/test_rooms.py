"""The package's rooms keep their walls: a small top level, subpackages that say what they hold and
what they may import (their docstring's "May import:" line), imports that keep to it, no cycle."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fondation_agent"
MAX_TOP_LEVEL_MODULES = 8


def rooms() -> list[Path]:
    return sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def allowed_imports(room: Path) -> set[str]:
    docstring = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
    line = re.search(r"^May import: (.*)$", docstring, re.MULTILINE)
    assert line, f"{room.name}/__init__.py: its docstring must say what the room may import"
    return set(re.findall(r"fondation_agent\.(\w+)", line.group(1)))


def imported_parts(module: Path) -> set[str]:
    """The parts of fondation_agent a module imports (a room, or a top-level module)."""
    parts = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("fondation_agent."):
                parts.add(name.split(".")[1])
    return parts


def test_the_top_level_is_small_and_the_rooms_are_many() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    assert len(rooms()) >= 3


def test_every_room_imports_only_what_its_docstring_allows() -> None:
    for room in rooms():
        allowed = allowed_imports(room) | {room.name}
        for module in room.rglob("*.py"):
            strays = imported_parts(module) - allowed
            assert not strays, f"{module.relative_to(PACKAGE)} imports {sorted(strays)}, not allowed for {room.name}/"


def test_the_rooms_import_each_other_without_a_cycle() -> None:
    graph = {room.name: allowed_imports(room) & {r.name for r in rooms()} for room in rooms()}
    visiting: list[str] = []

    def visit(name: str) -> None:
        assert name not in visiting, f"import cycle: {' -> '.join([*visiting, name])}"
        visiting.append(name)
        for other in graph[name]:
            visit(other)
        visiting.pop()

    for name in graph:
        visit(name)


def test_what_runs_as_root_or_inside_a_job_imports_nothing_of_the_agent() -> None:
    allowed = {"fondation_agent.sandbox", "fondation_agent.sandbox.launcher", "fondation_agent.sandbox.gateway"}
    for name in ("launcher", "job_exec", "relay"):
        source = (PACKAGE / "sandbox" / f"{name}.py").read_text()
        imports = re.findall(r"^\s*(?:from|import) (fondation_agent[\w.]*)", source, re.MULTILINE)
        assert set(imports) <= allowed, (name, imports)
    # The gateway's constants, which they import, come with nothing else (no aiohttp in a root process).
    constants = ast.parse((PACKAGE / "sandbox" / "gateway" / "__init__.py").read_text())
    imports = [node for node in ast.walk(constants) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert all(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in imports)
