"""The shape a newcomer can hold in their head (docs/architecture.md): no module imports in a
circle, no private name is imported from another module, no source module outgrows ~600 lines,
and every reply id is built in one place (router/cases/replies.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "router", "adapters", "plugins", "normalizer")
MAX_LINES = 600

# Known exceptions, each someone else's to remove; shrink these to nothing.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_LONG: set[str] = set()


def sources() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def cycles(imports: dict[str, set[str]]) -> list[frozenset[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in imports.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_in_a_circle():
    """Imports inside functions count too: moving one there hides a cycle, it does not remove it."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    found = [sorted(c) for c in cycles(imports) if c not in KNOWN_CYCLES]
    assert not found, f"modules importing each other: {found}"


def test_cycles_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] in PACKAGES:
                found += [f"{rel(path)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_no_source_module_outgrows_600_lines():
    found = []
    for path in sources():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and rel(path) not in KNOWN_LONG:
            found.append(f"{rel(path)}: {lines} lines")
    assert not found, "split these by what they hold:\n" + "\n".join(found)


REPLY_ID = re.compile(r"""["']rep_|f["'][^"']*\brep_""")


def test_reply_ids_are_built_in_one_place():
    found = []
    for path in sources():
        if rel(path) == "router/cases/replies.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if REPLY_ID.search(line):
                found.append(f"{rel(path)}:{n}: {line.strip()}")
    assert not found, "reply ids built by hand (use router.cases.replies):\n" + "\n".join(found)
