"""The worker's pace in a surge: while it is behind, a gateway is busy and the worker has to wait
for a CPU, it keeps to a share of a core, so that the intake sharing those CPUs keeps
acknowledging at speed.

Where a worker shares its host's cores with a gateway (``make run``, one VM, a small pod), a
burst that saturates them is shared out by the kernel alone: the worker, with a backlog, takes a
whole core and the gateway's acknowledgements slow (bench/intake.py: 0.36-0.43 of a bare
endpoint). An acknowledgement is what a customer waits for, in milliseconds; routing may lag
seconds in a surge (the first-response deadlines are minutes). So the worker rests while all
three hold:

- it is **behind**: the jobs it last claimed were due more than ``lag`` seconds ago;
- a gateway is **busy**: a gateway process's event loop was running or waiting for a CPU for more
  than ``BUSY`` of the last half second (each gateway reports it, ``IntakeLoadReport``), and, once
  the worker rests, until below ``CALM`` (its rests lower that load); below that its
  acknowledgements are prompt whatever the worker does, and routing must not fall behind for
  nothing (at a steady 500 messages a second a gateway is a third busy);
- its CPU is **contended**: the worker itself waited for a CPU for more than ``ENGAGE`` of the time
  it was ready to run (smoothed over about half a second): it shares cores with something. A worker
  on a host of its own never rests, however busy the gateways elsewhere are.

It does not rest when resting buys little but a backlog: when routing the intake as it comes
needs less than ``OUTPACED`` (1.5) cores of this worker's CPU (its CPU time over the time the jobs
it claimed were queued across, ``need``, worked out each second from its claims' due times: at a
steady 500 messages a second, ~0.9 of a core on a two-core machine on a fast day).
Below a core the intake is one this worker keeps up with at full speed; a rest, at ``share`` of a
core, would leave it behind for as long as the intake lasts and further behind every second
(bench/intake.py at a steady 500 a second: 36 s behind after a minute, and the surge never ended).
Between one and ``OUTPACED`` the backlog grows either way, but at full speed (a core of its own)
by ``1 - 1/need`` of a second a second (at most a third), resting by ``1 - share/need`` (0.8-0.87
at a share of 0.2): a rest there would push first responses past their deadlines for
acknowledgements that are prompt anyway (at 450 a second on a slow machine, routing ended 64-72 s
behind with the rests, 23-32 s without; the acknowledgements' p50 5 against 13 ms). A rest is for
a burst well beyond routing's speed (a closed loop, an outage's first minutes: the intake several
times what the worker routes), where it costs routing least and the acknowledgements get the CPU.

It does not rest while Redis writes its data in a forked child (an AOF rewrite, a snapshot:
``INFO persistence``, read with the gateways' load). The child takes a CPU and, with
``appendfsync always``, stalls Redis's writes behind its own disk writes. All three conditions
then hold, but not because of a burst: the worker is behind by the stall, the gateway waits for
the CPU the child took. Resting then adds seconds of backlog and no speed to the
acknowledgements (bench/intake.py across a rewrite of a ~415 MB AOF: queue p99 5.8 s with four
such rests against 427 ms without, acknowledgements' p99 28 against 15 ms).

Resting, it keeps to ``share`` of a core: before its next claim it rests as long as the CPU time
it used since resting began, divided by ``share``, exceeds the time that has passed since then,
its rests included (jobs already running go on; only new claims wait). It works at full speed
again as soon as it has caught up or no gateway is busy (or its CPU is free again: below
``RELEASE``), so a backlog drains at once when the burst is over.

``GATEWAY_WORKER_SURGE_SHARE`` sets ``share`` (1: never rest) and ``GATEWAY_WORKER_SURGE_LAG_SECONDS``
the lag. ``GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS`` (0, none, by default) bounds how far behind
the pace may leave routing: no rest once the jobs the worker claims were due longer ago than that.
A customer's first response (the acknowledgement the worker sends as it opens the case; 60 s for
the app, 30 s for a call, domain.md) waits on routing, and at a rate between what the worker takes
at its share and at full speed a rest that began never ends while the gateway stays busy: routing
falls further behind every second (at a steady 500 messages a second on a slow two-core machine,
5-8 s behind within the minute after the pace engaged; bench/RESULTS.md, twenty-fifth pass). The
``need`` rule above now keeps such a rest from beginning wherever the worker keeps up at full
speed; the bound is for a long burst beyond that, and trades the acknowledgements' latency there
for first responses in time.

Where the kernel keeps no scheduler statistics (``/proc/thread-self/schedstat``, Linux) the worker
never rests and the gateways report nothing.

This differs from ``GATEWAY_WORKER_NICE`` (``router.worker.yield_cpu``): niceness and
``SCHED_IDLE`` yield whenever anything else wants the CPU, the worker's steady routing too, and an
unprivileged process cannot take them back when the surge is over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Awaitable, Callable, Sequence

from normalizer.ids import new_id

log = logging.getLogger("gateway.worker")

#: A gateway is busy from here: its event loop ran or waited for a CPU this part of the time.
BUSY = 0.5
#: ... and, once the worker rests, until below this: its rests take some of the gateway's waits for
#: a CPU out of the gateway's load, which then ended the surge they were for (at 1,000 messages a
#: second behind a backlog the busiest gateway read 0.44-0.64 while the worker rested, and the surge
#: ended and began again up to five times in 10 s); at a steady 500 a second a gateway is ~0.33.
CALM = 0.4
#: The worker's CPU is contended from here: it waited for one this part of the time it was ready.
ENGAGE = 0.15
#: ... and no longer below this.
RELEASE = 0.05
#: How much of each window's figure enters the smoothed contention (about half a second's worth).
SMOOTHING = 0.1
#: How often the worker decides (each decision reads one small /proc file).
WINDOW_S = 0.05
#: How often the worker reads the gateways' load (one HGETALL).
LOAD_EVERY_S = 0.25
#: The longest single rest: the worker's claims are never held longer than this at a time.
LONGEST_REST_S = 0.5
#: How often the worker works out the CPU it needs to keep up (``Pacer.need``), and from how many
#: jobs claimed at least.
NEED_EVERY_S = 1.0
NEED_LEAST_JOBS = 20
#: Routing the intake as it comes needs more than this many cores of the worker's CPU: a burst
#: well beyond routing at full speed, which a rest makes little worse for routing (and, once
#: resting, until below ``KEEPS_UP``).
OUTPACED = 1.5
KEEPS_UP = 1.3
#: How often a gateway reports its load, and how long a report counts.
REPORT_EVERY_S = 0.5
REPORT_EXPIRES_MS = 3000

SCHEDSTAT = "/proc/thread-self/schedstat"


def read_schedstat(path: str = SCHEDSTAT) -> tuple[int, int] | None:
    """The calling thread's time on a CPU and time waiting for one (ns), since it started; None
    where the kernel does not keep them."""
    try:
        with open(path, "rb") as f:
            run, wait, _ = f.read().split(maxsplit=2)
        return int(run), int(wait)
    except (OSError, ValueError):
        return None


class Pacer:
    """Decides the worker's rests (see the module). ``claimed`` is told how late each claim's
    oldest job was; ``rest`` is awaited before each poll, in the event loop's thread."""

    def __init__(self, share: float, lag_seconds: float, *, most_behind_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time,
                 schedstat: Callable[[], tuple[int, int] | None] = read_schedstat) -> None:
        self.share = share
        self.lag = lag_seconds
        #: No rest once this far behind (s); 0: no such bound.
        self.most_behind = most_behind_seconds
        #: The highest load a gateway reported (``Workers.intake_load``, given by ``watch``); None:
        #: not yet connected, no gateway is ever busy.
        self.intake_load: Callable[[], Awaitable[float]] | None = None
        #: Whether Redis writes in a forked child now (``Workers.persisting_in_a_child``); None: never.
        self.persisting: Callable[[], Awaitable[bool]] | None = None
        self.count: Callable[[str, float], Any] | None = None
        self._clock, self._cpu, self._schedstat = clock, cpu, schedstat
        first = schedstat()
        self._kernel_figures = first is not None
        self._at, self._used, self._stat = clock(), cpu(), first or (0, 0)
        self._load_at = float("-inf")
        #: How late (s) the oldest job of the last claim was; 0 after a poll that found none.
        self.late = 0.0
        #: The busiest gateway's load, as last read.
        self.load = 0.0
        #: Redis was writing in a forked child when the load was last read.
        self.forked = False
        #: The part of its ready time this worker waited for a CPU, smoothed.
        self.contention = 0.0
        #: Resting now (behind, a gateway busy, contended).
        self.pacing = False
        #: Seconds rested since start, how many rests, and how many times resting began.
        self.rested_s = 0.0
        self.rests = 0
        self.surges = 0
        #: The rest it owes (s), carried from one decision to the next while resting.
        self.owed = 0.0
        #: Cores of this worker's CPU that routing the intake as it comes needs: its CPU time over
        #: the span of due times of the jobs it claimed in the last ``NEED_EVERY_S`` (None: not
        #: known yet, or nothing claimed in the last one: no bar to a rest; fewer than
        #: ``NEED_LEAST_JOBS`` claimed: the last figure stands).
        self.need: float | None = None
        self._need_at, self._need_cpu = self._at, self._used
        self._jobs, self._due_lo, self._due_hi = 0, float("inf"), float("-inf")

    @property
    def enabled(self) -> bool:
        """Rests at all: a share below a whole core, the gateways' load to read, and the kernel
        keeps the statistics."""
        return self.share < 1 and self.intake_load is not None and self._kernel_figures

    def watch(self, intake_load: Callable[[], Awaitable[float]],
              count: Callable[[str, float], Any] | None = None,
              persisting: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Read the gateways' load from here on (the worker's store, once it is connected); with
        ``count``, the surges and the seconds rested counted in the shared metrics
        (``gateway_worker_surges``, ``gateway_worker_rested_seconds``); with ``persisting``,
        whether Redis writes in a forked child, read with the load."""
        self.intake_load = intake_load
        self.count = count
        self.persisting = persisting

    def claimed(self, late_seconds: float, dues: Sequence[float] = ()) -> None:
        """Told after each claim: how late its oldest job was, and the jobs' due times (s)."""
        self.late = max(0.0, late_seconds)
        if dues:
            self._jobs += len(dues)
            self._due_lo = min(self._due_lo, *dues)
            self._due_hi = max(self._due_hi, *dues)

    @property
    def outpaced(self) -> bool:
        """The intake needs more of this worker's CPU than ``OUTPACED`` cores (see ``need``): at full
        speed it would fall well behind anyway. Unknown: as if so."""
        return self.need is None or self.need > (KEEPS_UP if self.pacing else OUTPACED)

    def _work_out_need(self, now: float, cpu: float) -> None:
        if now - self._need_at < NEED_EVERY_S:
            return
        span = self._due_hi - self._due_lo
        if self._jobs >= NEED_LEAST_JOBS and span > 0:
            self.need = (cpu - self._need_cpu) / span
        elif self._jobs == 0:
            self.need = None  # nothing claimed for a second: idle, or held by a rest as long
        self._need_at, self._need_cpu = now, cpu
        self._jobs, self._due_lo, self._due_hi = 0, float("inf"), float("-inf")

    @property
    def past_the_bound(self) -> bool:
        """Further behind than ``most_behind`` (when there is such a bound): no rest."""
        return bool(self.most_behind) and self.late >= self.most_behind

    async def rest(self) -> None:
        """Rest before the next claim if the worker is over its share in a surge."""
        if not self.enabled:
            return
        now = self._clock()
        wall = now - self._at
        if wall < WINDOW_S:
            return
        cpu = self._cpu()
        used = cpu - self._used
        stat = self._schedstat() or self._stat
        ran, waited = stat[0] - self._stat[0], stat[1] - self._stat[1]
        if ran + waited > 0:
            self.contention += SMOOTHING * (waited / (ran + waited) - self.contention)
        self._at, self._used, self._stat = now, cpu, stat  # (a rest below is part of the next window)
        self._work_out_need(now, cpu)
        behind = self.late >= self.lag and not self.past_the_bound and self.outpaced
        if now - self._load_at >= LOAD_EVERY_S and behind:
            self._load_at = now
            self.load = await self._read_load()
            self.forked = self.load >= CALM and await self._read_forked()
        was = self.pacing
        self.pacing = (behind and self.load >= (CALM if was else BUSY)
                       and self.contention >= (RELEASE if was else ENGAGE) and not self.forked)
        if self.pacing != was:
            self._say(was)
        # What it owes since resting began: its CPU time at ``share`` less the time that passed, a
        # rest's own time included (the rest is in the next window's wall: it pays what it was
        # owed then, and is not counted off again). A rest cut short by the longest carries the
        # rest of the debt; a window under the share earns no credit for later.
        self.owed = max(0.0, self.owed + used / self.share - wall) if self.pacing else 0.0
        if self.owed > 0:
            rest = min(self.owed, LONGEST_REST_S)
            self.rests += 1
            self.rested_s += rest
            if self.count is not None:
                self.count("gateway_worker_rested_seconds", rest)
            await asyncio.sleep(rest)

    async def _read_load(self) -> float:
        assert self.intake_load is not None
        try:
            return await self.intake_load()
        except Exception as exc:  # noqa: BLE001 - Redis away: no gateway counts as busy, the worker works on
            log.debug("worker: the gateways' load not read (%s)", type(exc).__name__)
            return 0.0

    async def _read_forked(self) -> bool:
        if self.persisting is None:
            return False
        try:
            return await self.persisting()
        except Exception as exc:  # noqa: BLE001 - Redis away, or INFO refused (an ACL): as if no child
            log.debug("worker: Redis's persistence not read (%s)", type(exc).__name__)
            return False

    def _say(self, was: bool) -> None:
        if not was:
            self.surges += 1
            if self.count is not None:
                self.count("gateway_worker_surges", 1)
            log.info("worker: %.1f s behind, a gateway %.0f%% busy and this worker waiting for a CPU %.0f%% of its "
                     "ready time: keeping to %.0f%% of a core so that the intake acknowledges at speed",
                     self.late, 100 * self.load, 100 * self.contention, 100 * self.share)
            return
        why = ("caught up" if self.late < self.lag
               else f"{self.late:.0f} s behind: first responses before acknowledgements' speed" if self.past_the_bound
               else f"routing the intake needs {self.need:.2f} of a core, too little for a rest" if not self.outpaced
               else "no gateway busy" if self.load < CALM
               else "Redis writing in a forked child (an AOF rewrite or a snapshot)" if self.forked
               else "its CPU free")
        log.info("worker: %s; full speed again (%.1f s rested in all)", why, self.rested_s)


class IntakeLoadReport:
    """A gateway process's load, reported for the workers' pace: the part of the last
    ``REPORT_EVERY_S`` its event loop's thread was running or waiting for a CPU (1: it never idled).
    ``run`` runs in the event loop's thread until cancelled; then the report is withdrawn."""

    def __init__(self, report: Callable[[str, float, int], Awaitable[Any]],
                 forget: Callable[[str], Awaitable[Any]], *, clock: Callable[[], float] = time.monotonic,
                 schedstat: Callable[[], tuple[int, int] | None] = read_schedstat) -> None:
        self.report, self.forget = report, forget
        self._clock, self._schedstat = clock, schedstat
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('g')[-6:]}"

    def measure(self, since: tuple[float, tuple[int, int]]) -> tuple[float, tuple[float, tuple[int, int]]] | None:
        """The load since the mark ``since``, and the new mark; None where the kernel keeps no figures."""
        stat = self._schedstat()
        if stat is None:
            return None
        now = self._clock()
        wall_ns = (now - since[0]) * 1e9
        busy = (stat[0] - since[1][0]) + (stat[1] - since[1][1])
        return (min(1.0, busy / wall_ns) if wall_ns > 0 else 0.0), (now, stat)

    async def run(self) -> None:
        first = self._schedstat()
        if first is None:
            return  # not Linux: the workers never see a busy gateway, and never rest
        mark = (self._clock(), first)
        reported = False
        try:
            while True:
                await asyncio.sleep(REPORT_EVERY_S)
                measured = self.measure(mark)
                if measured is None:
                    return
                load, mark = measured
                try:
                    await self.report(self.gateway_id, load, REPORT_EXPIRES_MS)
                    reported = True
                except Exception as exc:  # noqa: BLE001 - Redis away: the next report, or it expires
                    log.debug("intake load not reported (%s)", type(exc).__name__)
        finally:
            if reported:
                try:
                    await self.forget(self.gateway_id)
                except Exception:  # noqa: BLE001 - Redis away at shutdown: the report expires
                    pass


__all__ = ["BUSY", "CALM", "ENGAGE", "IntakeLoadReport", "KEEPS_UP", "LONGEST_REST_S", "NEED_EVERY_S",
           "NEED_LEAST_JOBS", "OUTPACED", "Pacer", "RELEASE", "REPORT_EXPIRES_MS",
           "WINDOW_S", "read_schedstat"]
