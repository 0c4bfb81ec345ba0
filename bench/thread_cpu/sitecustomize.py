"""Thread CPU per call of chosen functions, measured inside a running worker (issue 21).

    PYTHONPATH=bench/thread_cpu THREAD_CPU_OUT=/tmp/tcpu .venv/bin/python bench/cost.py --rounds 1 --messages 6000 --rate 1500

Python loads this module at start-up in every process the benchmark starts; in the worker
(``gateway worker``) it wraps the functions named in ``TARGETS`` (or ``THREAD_CPU_TARGETS``:
``module:Owner.name,module:name``) once their modules are imported, and adds up each one's calls
and thread CPU time (``time.thread_time_ns``: the CPU of this thread alone, not the wall time a
busy machine stretches). A call inside another measured call is not counted apart. At exit (or
SIGTERM) the totals go to ``$THREAD_CPU_OUT.<pid>`` as ``name n=<calls> us=<µs per call>``.

Why: at saturation a function costs about twice what it costs in a tight loop (its data and the
interpreter's are out of the CPU's caches after the rest of a message's work), and the whole
worker's CPU per message moves by ±5 % from run to run on a shared machine; this compares one
function's own cost, in place, before and after a change. Only synchronous functions can be
measured this way (a coroutine's thread time would include whatever ran while it waited).
"""

from __future__ import annotations

import atexit
import builtins
import os
import signal
import sys
import time

TARGETS = ("router.store.complaints:encode_complaint,router.understanding.model:CategoryModel.predict,"
           "router.incident_window:Window.alike,router.incident_window:Window.held")


def _install() -> None:
    wanted: dict[str, list[tuple[str, str]]] = {}
    for target in os.environ.get("THREAD_CPU_TARGETS", TARGETS).split(","):
        module, _, path = target.strip().partition(":")
        owner, _, name = path.rpartition(".")
        wanted.setdefault(module, []).append((owner, name))
    stats: dict[str, list[int]] = {}
    depth = [0]

    def measured(function, label: str):
        def call(*args, **kwargs):
            if depth[0]:
                return function(*args, **kwargs)
            depth[0] += 1
            start = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                depth[0] -= 1
                totals = stats.setdefault(label, [0, 0])
                totals[0] += 1
                totals[1] += time.thread_time_ns() - start
        return call

    original_import = builtins.__import__

    def importing(name, *args, **kwargs):
        module = original_import(name, *args, **kwargs)
        for module_name in [m for m in wanted if m in sys.modules]:
            loaded = sys.modules[module_name]
            if all(hasattr(loaded, owner or name) for owner, name in wanted[module_name]):  # (fully imported)
                for owner, name in wanted.pop(module_name):
                    holder = getattr(loaded, owner) if owner else loaded
                    setattr(holder, name, measured(getattr(holder, name), f"{owner + '.' if owner else ''}{name}"))
        return module

    builtins.__import__ = importing

    def dump() -> None:
        with open(f"{os.environ.get('THREAD_CPU_OUT', '/tmp/thread_cpu')}.{os.getpid()}", "w") as out:
            for label, (calls, ns) in sorted(stats.items()):
                out.write(f"{label} n={calls} us={ns / calls / 1000:.1f}\n")

    atexit.register(dump)
    signal.signal(signal.SIGTERM, lambda *_: (dump(), os._exit(0)))


if "worker" in sys.argv and os.environ.get("THREAD_CPU_OFF") is None:
    _install()
