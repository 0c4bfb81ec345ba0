"""`python -m gateway worker`, plus a job log: one line when this process starts running an arq
job (after arq's claim) and one when its run ends (done, retried or failed), so a benchmark that
SIGKILLs workers knows exactly which jobs each killed process held and when another process took
them up again.

    SOAK_JOBLOG=/tmp/dir python bench/joblog_worker.py     # writes /tmp/dir/jobs.<pid>

Each line is written with one os.write (no Python buffering): what the kernel accepted before a
SIGKILL is in the file. Lines: ``S <job id> <unix µs>`` and ``E <job id> <unix µs>`` (a job
that retries has several S/E pairs; its last E is when it finished).
The worker itself is the unchanged router.arq_worker.WakeableWorker; only ``run_job`` is wrapped.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def install(directory: str) -> None:
    from router import arq_worker as w

    fd = os.open(os.path.join(directory, f"jobs.{os.getpid()}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    original = w.WakeableWorker.run_job

    async def run_job(self, job_id: str, score: int) -> None:  # type: ignore[no-untyped-def]
        os.write(fd, f"S {job_id} {time.time_ns() // 1000}\n".encode())
        try:
            await original(self, job_id, score)
        finally:
            os.write(fd, f"E {job_id} {time.time_ns() // 1000}\n".encode())

    w.WakeableWorker.run_job = run_job  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ["SOAK_JOBLOG"])
    from gateway.cli import main

    sys.exit(main(["worker"]))
