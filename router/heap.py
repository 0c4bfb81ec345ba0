"""The garbage collector of a long-running process (the worker, the HTTP server), set for its work
once it has started.

What a process holds from its start-up (modules, the app, the categoriser's vocabulary, the
plugins) lives as long as the process, yet CPython's collector walks all of it again at every
full collection: ~100 ms each in a worker with its model loaded (bench/RESULTS.md), a pause every
job of the moment waits out. ``settle_heap`` collects once, then freezes what is left (``gc.freeze``:
moved to a generation the collector never walks), so later collections walk only what was made
since. And the first generation is collected after ``FIRST_GENERATION`` new objects instead of
CPython's 700: a job's short-lived objects (a parsed message, a decoded complaint, redis-py's
replies) are mostly gone by then instead of being promoted, half alive, to the older generations.

Called by the processes' own entry points only (``router.worker.run_worker``, ``gateway.asgi``),
never by code that builds an app or a worker inside another process (the tests): what is frozen
is never walked again. A frozen object is still freed when its last reference goes; only one
caught in a reference cycle stays: a model replaced by a newer one, a connection pool replaced
after a failover — once per such event, bounded, against a pause on every full collection.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("gateway.heap")

#: New objects (allocations less deallocations) between two collections of the first generation.
FIRST_GENERATION = 10_000


def settle_heap(first_generation: int = FIRST_GENERATION) -> int:
    """Collect, freeze what survives, and raise the first generation's threshold to at least
    ``first_generation``. Answers how many objects are frozen."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, first_generation), gen1, gen2)
    frozen = gc.get_freeze_count()
    log.info("heap settled: %d objects frozen, first generation every %d", frozen, gc.get_threshold()[0])
    return frozen


__all__ = ["FIRST_GENERATION", "settle_heap"]
