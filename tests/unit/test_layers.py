"""The layering of docs/architecture.md holds: imports point down only (gateway > router |
adapters > plugins > normalizer; router and adapters never import each other), checked with
import-linter's contract in pyproject.toml, the same check anyone can run as `lint-imports`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_imports_point_down_only():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
