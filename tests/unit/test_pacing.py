"""The worker's pace in a surge (router.pacing): when it rests, how long, and when it stops; and
what a gateway reports of its load.

The clock, the CPU time, the scheduler's figures and the gateways' load are the inputs here,
stepped by hand; the same decisions on a real CPU shared with a real busy process, with the load
going through Redis, are in tests/integration/test_worker_pacing.py.
"""

from __future__ import annotations

import asyncio

import pytest

from router.pacing import (BUSY, CALM, ENGAGE, LOAD_EVERY_S, LONGEST_REST_S, RELEASE, SMOOTHING, WINDOW_S,
                           IntakeLoadReport, Pacer, read_schedstat)


class Host:
    """What the pacer reads: a wall clock, this process's CPU time, and this thread's time on a
    CPU and waiting for one (ns). ``step`` advances them as a window of work would."""

    def __init__(self) -> None:
        self.now, self.cpu, self.ran, self.waited = 100.0, 5.0, 0, 0
        self.slept: list[float] = []
        self.gateway_load = 0.9  # the busiest gateway's, as the pacer reads it
        self.forked = False  # Redis writing in a forked child (an AOF rewrite, a snapshot)
        self.forked_reads = self.load_reads = 0

    async def intake_load(self) -> float:
        self.load_reads += 1
        return self.gateway_load

    async def persisting(self) -> bool:
        self.forked_reads += 1
        return self.forked

    def step(self, wall: float, cpu: float, waited: float) -> None:
        self.now += wall
        self.cpu += cpu
        self.ran += int(cpu * 1e9)
        self.waited += int(waited * 1e9)

    def pacer(self, share: float = 0.3, lag: float = 0.5, most_behind: float = 0.0) -> Pacer:
        pacer = Pacer(share, lag, most_behind_seconds=most_behind, clock=lambda: self.now, cpu=lambda: self.cpu,
                      schedstat=lambda: (self.ran, self.waited))
        pacer.watch(self.intake_load, persisting=self.persisting)
        pacer.contention = 0.4  # as if contended for a while already (the figure is smoothed)
        return pacer


@pytest.fixture
def host(monkeypatch) -> Host:
    h = Host()

    async def sleep(seconds: float) -> None:  # the rest, recorded and passed on the host's clock
        h.slept.append(seconds)
        h.now += seconds

    monkeypatch.setattr("router.pacing.asyncio.sleep", sleep)
    return h


def run(coro) -> None:
    asyncio.run(coro)


def test_a_worker_behind_on_contended_cpus_beside_a_busy_gateway_keeps_to_its_share(host):
    pacer = host.pacer(share=0.3)
    pacer.claimed(4.0)  # its last claim's oldest job was due 4 s ago
    host.step(wall=0.1, cpu=0.06, waited=0.04)  # ran 60 % of the window, waited 40 % of its ready time
    run(pacer.rest())
    assert pacer.pacing and pacer.load == 0.9 and pacer.surges == 1
    # 0.06 s of CPU is 0.2 s at 30 % of a core: 0.1 s have passed, so it rests 0.1 s
    assert host.slept == [pytest.approx(0.1)]
    assert (pacer.rests, pacer.rested_s) == (1, pytest.approx(0.1))
    # the rest is part of the next window: the CPU its running jobs used meanwhile counts too, and
    # the rest paid what was owed: 0.12 s of CPU in all is 0.4 s at 30 %, 0.25 s have passed
    host.step(wall=0.05, cpu=0.06, waited=0.03)
    run(pacer.rest())
    assert host.slept[-1] == pytest.approx(0.12 / 0.3 - 0.25)


@pytest.mark.parametrize("cpu_part", [0.8, 0.5])
def test_resting_it_uses_its_share_of_the_time_its_rests_included(host, cpu_part):
    """Over a long surge, the CPU it used is its share of the time that passed (a rest is paid
    once: counted off again in the window after it too, the worker took ~0.44 of a core at 0.3)."""
    pacer = host.pacer(share=0.3)
    pacer.claimed(10.0)
    start_now, start_cpu = host.now, host.cpu
    for _ in range(200):  # windows of work between rests: its jobs run, on a CPU it has cpu_part of
        host.step(wall=0.08, cpu=0.08 * cpu_part, waited=0.08 * (1 - cpu_part))
        run(pacer.rest())
    assert pacer.pacing and pacer.surges == 1
    used, passed = host.cpu - start_cpu, host.now - start_now
    assert used / passed == pytest.approx(0.3, rel=0.02)


def test_a_rest_cut_short_is_carried_and_a_calm_window_earns_no_credit(host):
    pacer = host.pacer(share=0.1)
    pacer.claimed(60.0)
    host.step(wall=0.1, cpu=0.1, waited=0.05)
    run(pacer.rest())  # owes 1.0 - 0.1 = 0.9 s: rests the longest
    assert host.slept == [LONGEST_REST_S] and pacer.owed == pytest.approx(0.9)
    host.step(wall=0.1, cpu=0.0, waited=0.0)
    run(pacer.rest())  # the rest of it: 0.9 less the rest and the window
    assert host.slept[-1] == pytest.approx(0.9 - LONGEST_REST_S - 0.1)
    host.step(wall=1.0, cpu=0.01, waited=0.002)  # a calm second: owes nothing, and earns nothing
    run(pacer.rest())
    assert pacer.owed == 0
    host.step(wall=0.1, cpu=0.02, waited=0.01)
    run(pacer.rest())
    assert host.slept[-1] == pytest.approx(0.02 / 0.1 - 0.1)


def test_a_worker_that_keeps_up_never_rests(host):
    pacer = host.pacer()
    for _ in range(5):
        pacer.claimed(0.02)  # 20 ms late: keeping up
        host.step(wall=0.1, cpu=0.05, waited=0.05)
        run(pacer.rest())
    assert not pacer.pacing and host.slept == [] and pacer.load == 0  # (nor reads the gateways' load)


@pytest.mark.parametrize("gateway_load, contention, waited", [
    (BUSY - 0.1, 0.4, 0.5),  # no gateway busy: at a steady rate it is prompt whatever the worker does
    (0.9, 0.0, ENGAGE / 2),  # a CPU of its own: resting would leave it idle
], ids=["no gateway busy", "a cpu of its own"])
def test_a_worker_behind_works_at_full_speed_unless_a_busy_gateway_shares_its_cpu(host, gateway_load, contention,
                                                                                   waited):
    host.gateway_load = gateway_load
    pacer = host.pacer()
    pacer.contention = contention
    pacer.claimed(30.0)
    for _ in range(10):
        host.step(wall=0.1, cpu=0.1 * (1 - waited), waited=0.1 * waited)
        run(pacer.rest())
    assert not pacer.pacing and host.slept == []


def test_contention_is_smoothed_so_one_window_neither_starts_nor_ends_a_rest(host):
    pacer = host.pacer()
    pacer.contention = 0.0
    pacer.claimed(5.0)
    host.step(wall=0.06, cpu=0.01, waited=0.04)  # one window of 80 % waiting
    run(pacer.rest())
    assert pacer.contention == pytest.approx(SMOOTHING * 0.8) and not pacer.pacing


def test_resting_stops_when_the_gateways_calm_down_the_worker_catches_up_or_its_cpu_frees(host):
    pacer = host.pacer()
    pacer.claimed(3.0)
    host.step(wall=0.1, cpu=0.07, waited=0.03)
    run(pacer.rest())
    assert pacer.pacing
    host.gateway_load = BUSY / 2  # read again a quarter second later
    host.step(wall=0.3, cpu=0.2, waited=0.1)
    run(pacer.rest())
    assert not pacer.pacing
    host.gateway_load = 0.95
    host.step(wall=0.3, cpu=0.2, waited=0.1)
    run(pacer.rest())
    assert pacer.pacing and pacer.surges == 2
    pacer.claimed(0.0)  # a poll found nothing waiting
    rests = len(host.slept)
    host.step(wall=0.1, cpu=0.07, waited=0.03)
    run(pacer.rest())
    assert not pacer.pacing and len(host.slept) == rests
    # contended again; between RELEASE and ENGAGE it keeps resting, below RELEASE it stops
    pacer.claimed(3.0)
    host.step(wall=0.1, cpu=0.07, waited=0.03)
    run(pacer.rest())
    assert pacer.pacing
    pacer.contention = (RELEASE + ENGAGE) / 2 / (1 - SMOOTHING)  # (one window of no waiting in it)
    host.step(wall=0.1, cpu=0.1, waited=0.0)
    run(pacer.rest())
    assert pacer.pacing
    for _ in range(40):
        host.step(wall=0.1, cpu=0.1, waited=0.0)
        run(pacer.rest())
    assert not pacer.pacing and pacer.contention < RELEASE


def test_a_gateway_busy_enough_to_begin_a_surge_keeps_it_going_until_it_is_calm(host):
    """The rests lower the gateway's load (its waits for a CPU): between CALM and BUSY a surge goes
    on, and none begins."""
    host.gateway_load = (CALM + BUSY) / 2
    pacer = host.pacer()
    pacer.claimed(5.0)
    host.step(wall=0.3, cpu=0.2, waited=0.1)
    run(pacer.rest())
    assert not pacer.pacing and host.slept == []  # not busy enough to begin one
    host.gateway_load = BUSY
    host.step(wall=0.3, cpu=0.2, waited=0.1)
    run(pacer.rest())
    assert pacer.pacing
    host.gateway_load = (CALM + BUSY) / 2  # lower while the worker rests
    for _ in range(5):
        host.step(wall=0.3, cpu=0.2, waited=0.1)
        run(pacer.rest())
    assert pacer.pacing and pacer.surges == 1
    host.gateway_load = CALM - 0.01
    host.step(wall=0.3, cpu=0.2, waited=0.1)
    run(pacer.rest())
    assert not pacer.pacing


def test_a_rest_is_never_longer_than_the_longest(host):
    pacer = host.pacer(share=0.05)
    pacer.claimed(60.0)
    host.step(wall=1.0, cpu=0.7, waited=0.3)
    run(pacer.rest())
    assert host.slept == [LONGEST_REST_S]


def test_the_signals_are_read_once_a_window(host):
    pacer = host.pacer()
    pacer.claimed(5.0)
    host.step(wall=WINDOW_S / 2, cpu=WINDOW_S / 4, waited=WINDOW_S / 4)
    run(pacer.rest())
    assert not pacer.pacing and host.slept == []  # too early to tell
    host.step(wall=WINDOW_S, cpu=WINDOW_S / 2, waited=WINDOW_S / 2)
    run(pacer.rest())
    assert pacer.pacing and len(host.slept) == 1


def test_the_gateways_load_unread_counts_as_calm(host):
    async def away() -> float:
        raise ConnectionError("redis away")

    pacer = host.pacer()
    pacer.watch(away)
    pacer.claimed(10.0)
    host.step(wall=0.1, cpu=0.05, waited=0.05)
    run(pacer.rest())
    assert not pacer.pacing and host.slept == []


def test_no_rest_while_redis_writes_in_a_forked_child_and_a_surge_under_way_ends_when_one_begins(host):
    """An AOF rewrite's child takes a CPU (the gateway waits for one) and stalls Redis's writes (the
    worker falls behind): every condition holds, and resting would only add backlog."""
    host.forked = True
    pacer = host.pacer()
    for _ in range(5):
        pacer.claimed(4.0)
        host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
        run(pacer.rest())
    assert not pacer.pacing and pacer.forked and host.slept == [] and pacer.surges == 0
    host.forked = False  # the rewrite done, a real surge: the pace engages at the next reading
    host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
    run(pacer.rest())
    assert pacer.pacing and not pacer.forked and pacer.surges == 1 and len(host.slept) == 1
    host.forked = True  # a rewrite begins during the surge: full speed again
    host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
    run(pacer.rest())
    assert not pacer.pacing and pacer.owed == 0 and len(host.slept) == 1


def test_redis_persistence_is_read_with_the_load_only_when_a_gateway_is_busy_and_unread_counts_as_no_child(host):
    host.gateway_load = CALM / 2
    pacer = host.pacer()
    pacer.claimed(4.0)
    host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
    run(pacer.rest())
    assert host.forked_reads == 0  # (a calm gateway: no rest to decide on)
    host.gateway_load = 0.9
    for _ in range(10):
        host.step(wall=WINDOW_S, cpu=WINDOW_S * 0.6, waited=WINDOW_S * 0.4)
        run(pacer.rest())
    assert pacer.pacing
    assert 1 <= host.forked_reads == host.load_reads - 1 < 10  # read with the load (once a busy gateway's)

    async def refused() -> bool:
        raise PermissionError("NOPERM this user has no permissions to run the 'info' command")

    pacer = host.pacer()
    pacer.watch(host.intake_load, persisting=refused)
    pacer.claimed(4.0)
    host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
    run(pacer.rest())
    assert pacer.pacing and not pacer.forked


def test_a_share_of_a_whole_core_no_gateways_or_no_scheduler_figures_never_rests(host):
    assert not host.pacer(share=1.0).enabled
    assert not Pacer(0.3, 0.5).enabled  # no gateways' load to read (before the worker is connected)
    blind = Pacer(0.3, 0.5, clock=lambda: host.now, cpu=lambda: host.cpu, schedstat=lambda: None)
    blind.watch(host.intake_load)
    assert not blind.enabled
    blind.claimed(10.0)
    host.step(wall=1.0, cpu=0.5, waited=0.5)
    run(blind.rest())
    assert host.slept == []


def test_a_gateway_reports_the_part_of_the_time_its_loop_ran_or_waited_for_a_cpu(host):
    report = IntakeLoadReport(None, None, clock=lambda: host.now,  # type: ignore[arg-type]
                              schedstat=lambda: (host.ran, host.waited))
    mark = (host.now, (host.ran, host.waited))
    host.step(wall=0.5, cpu=0.2, waited=0.1)
    load, mark = report.measure(mark)
    assert load == pytest.approx(0.6)
    host.step(wall=0.5, cpu=0.5, waited=0.3)  # (figures are per CPU: never above a whole)
    assert report.measure(mark)[0] == 1.0
    assert IntakeLoadReport(None, None, schedstat=lambda: None).measure(mark) is None  # type: ignore[arg-type]


def test_no_rest_once_routing_is_the_bound_behind_so_that_first_responses_come_in_time(host):
    """At a rate between what the worker takes at its share and at full speed, a rest never ends
    while the gateway stays busy: the bound stops it (and no bound, the default, keeps resting)."""
    unbounded, bounded = host.pacer(), host.pacer(most_behind=20.0)
    for late in (1.0, 8.0, 19.0, 20.0, 35.0, 12.0):  # falling behind while it rests, then catching up
        for pacer in (unbounded, bounded):
            pacer.claimed(late)
        host.step(wall=LOAD_EVERY_S, cpu=LOAD_EVERY_S * 0.6, waited=LOAD_EVERY_S * 0.4)
        run(unbounded.rest())
        run(bounded.rest())
        assert unbounded.pacing
        assert bounded.pacing == (late < 20.0)
    assert bounded.surges == 2  # (under the bound again: a rest is due again)


def test_the_kernel_keeps_this_threads_figures():
    figures = read_schedstat()
    assert figures is not None and figures[0] > 0  # (Linux: every run of the suite is on Linux)
    assert read_schedstat("/proc/no/such/file") is None


def claim_at(pacer: Pacer, host: Host, rate: float, late: float, seconds: float, cpu_per_job: float) -> None:
    """A second (or ``seconds``) of claims from a queue filled at ``rate`` jobs a second: the worker,
    ``late`` behind, claims in 50-ms windows the jobs queued over that window, each ``cpu_per_job``
    of its CPU, on a CPU it waits for half the time (contended)."""
    for _ in range(round(seconds / 0.05)):
        due = host.now - late
        jobs = round(rate * 0.05)
        pacer.claimed(late, [due - 0.05 + 0.05 * (n + 1) / jobs for n in range(jobs)])
        used = jobs * cpu_per_job
        host.step(wall=0.05, cpu=used, waited=used)
        run(pacer.rest())
        host.now -= host.slept.pop() if host.slept else 0.0  # (this claim's pace: as if it kept up)


@pytest.mark.parametrize("cpu_per_job, rests", [(0.0016, False), (0.0025, False), (0.004, True)],
                         ids=["a core routes it: 0.8", "a little more than a core: 1.25", "well beyond a core: 2.0"])
def test_a_worker_behind_rests_only_when_routing_the_intake_needs_well_more_than_a_core(host, cpu_per_job, rests):
    """At 500 jobs a second, 1.6 ms of CPU each is 0.8 of a core: at full speed it catches up, and a
    rest would leave it further behind every second for as long as the intake lasts. At 2.5 ms
    each (1.25 of a core) it falls behind by a fifth of a second a second at full speed, resting by
    0.84 (at 0.2 of a core): no rest. At 4 ms (2 cores) it falls far behind anyway: it rests. (Its
    first second, before it knows, it rests as it always did.)"""
    pacer = host.pacer()
    claim_at(pacer, host, rate=500, late=2.0, seconds=3, cpu_per_job=cpu_per_job)
    assert pacer.need == pytest.approx(cpu_per_job * 500, rel=0.1)
    assert pacer.pacing is rests and pacer.outpaced is rests


def test_a_surge_ends_once_the_intake_slows_to_what_a_core_routes_and_until_then_is_not_known(host):
    pacer = host.pacer()
    pacer.claimed(4.0)  # one claim: not enough to tell what it needs
    host.step(wall=0.1, cpu=0.05, waited=0.05)
    run(pacer.rest())
    assert pacer.need is None and pacer.outpaced and pacer.pacing  # not known: as before, it rests
    claim_at(pacer, host, rate=1000, late=4.0, seconds=2, cpu_per_job=0.002)  # 2 cores' worth
    assert pacer.pacing and pacer.need == pytest.approx(2.0, rel=0.1)
    claim_at(pacer, host, rate=700, late=4.0, seconds=2, cpu_per_job=0.002)  # 1.4: above KEEPS_UP
    assert pacer.pacing
    claim_at(pacer, host, rate=600, late=4.0, seconds=2, cpu_per_job=0.002)  # 1.2
    assert not pacer.pacing and pacer.surges == 1 and not pacer.outpaced
    claim_at(pacer, host, rate=700, late=4.0, seconds=2, cpu_per_job=0.002)  # 1.4: below OUTPACED, none begins
    assert not pacer.pacing and pacer.surges == 1
