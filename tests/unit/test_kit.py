"""plugins.kit is the one module a channel needs: the example channels, written as an outside
integrator would, import nothing else of the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import plugins.kit as kit

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PACKAGES = {"gateway", "router", "adapters", "plugins", "normalizer"}


def test_every_name_the_kit_exports_is_there():
    assert sorted(kit.__all__) == sorted(set(kit.__all__))
    missing = [name for name in kit.__all__ if not hasattr(kit, name)]
    assert missing == []


@pytest.mark.parametrize("source", sorted((ROOT / "examples").glob("*/*/__init__.py")), ids=lambda p: p.parent.name)
def test_an_example_channel_imports_only_the_kit_from_the_gateway(source):
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert {m for m in imported if m.split(".")[0] in GATEWAY_PACKAGES} == {"plugins.kit"}
