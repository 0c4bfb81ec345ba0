"""bench/thread_cpu: the functions named are counted, with their thread CPU, in a process started
as a worker, and in no other process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "import json, textwrap\nfor n in range(50):\n    json.dumps(list(range(n)))\ntextwrap.dedent('  x')\n"


def _run(tmp_path: Path, *argv: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench" / "thread_cpu"), "THREAD_CPU_OUT": str(tmp_path / "cpu"),
           "THREAD_CPU_TARGETS": "json:dumps,textwrap:dedent,json:JSONEncoder.encode"}
    subprocess.run([sys.executable, "-c", PROGRAM, *argv], env=env, check=True, timeout=60)
    return [line for path in sorted(tmp_path.glob("cpu.*")) for line in path.read_text().splitlines()]


def test_a_worker_process_counts_each_named_function_apart_from_the_calls_inside_it(tmp_path: Path) -> None:
    lines = _run(tmp_path, "worker")
    assert [line.split()[:2] for line in lines] == [["dedent", "n=1"], ["dumps", "n=50"]]  # encode: inside dumps
    assert all(float(line.split("us=")[1]) >= 0 for line in lines)


def test_any_other_process_is_left_alone(tmp_path: Path) -> None:
    assert _run(tmp_path, "serve") == []
