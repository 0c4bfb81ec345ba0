"""The soak (bench/soak.py) small: 500 mixed-channel messages through two gateway processes and
three workers while a worker is SIGKILLed every few seconds, with the default job timeout. Slow
(about two minutes, most of it the orphaned jobs' 30 s) and load-bearing on a 2-core machine, so
it runs only on demand:

    GATEWAY_SOAK=1 .venv/bin/python -m pytest tests/soak -q

The full run is `.venv/bin/python bench/soak.py` (10,000 messages); figures in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("GATEWAY_SOAK") != "1", reason="soak: set GATEWAY_SOAK=1 to run"),
]


def test_soak_with_killed_workers_loses_nothing_and_repeats_nothing(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--messages", os.environ.get("GATEWAY_SOAK_MESSAGES", "500"),
         "--baseline", "100", "--rate", os.environ.get("GATEWAY_SOAK_RATE", "16"), "--kill-min", "2",
         "--kill-max", "4", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    result = json.loads(out.read_text())
    problems = {k: v for k, v in result["problems"].items() if v}
    assert result["kills"] >= 3, "the soak must actually kill workers"
    assert result["orphans"]["orphaned_jobs"] >= 1, "no kill caught a running job: nothing was proven"
    assert not problems, f"{problems}; evidence in {result['evidence_dir']}"
    assert proc.returncode == 0
