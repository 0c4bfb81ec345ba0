"""``GET /metrics`` for Prometheus.

Counters and histograms that several processes add to (gateways, workers) live in one Redis
hash (``Keys.metrics``: ``<prefix>metrics``), so whichever gateway process is scraped reports the whole desk;
gauges (queue depths, oldest ages, breaches, IMAP sync lag) are read from Redis at scrape time.
The intake latency histogram is per gateway process (``prometheus_client``'s own registry), the
usual Prometheus way for request latencies.

Field names in the hash: ``<metric>|<label>=<value>,<label>=<value>`` (counters) and
``<metric>_le|<labels>,le=<bound>`` (the bucket a value fell in, not cumulative) / ``_sum`` /
``_count`` (histograms).

A worker's per-job counts (job results and durations: a few per message) are not written per
job: ``incr`` and ``observe`` on a non-transactional pipeline of a connection pool that has a
``MetricsFlusher`` running (the worker's housekeeping starts one) add to this process's tally,
which the flusher writes once a second in one round trip, and once more when it is stopped (a
clean stop loses nothing; /metrics may be a second behind). A gateway runs one too (its
lifespan), for its intake outcomes (``gateway_messages_in``, one count per message, tallied by
``router/store/intake_script.py``); the gateway that is scraped writes its own tally first. Counts made inside a transaction
(a merge, a breach, a first response) are written with their change, as before: they count
only when the change commits.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import time
from collections import defaultdict
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY

from router.store.keys import Keys

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
FIRST_RESPONSE_BUCKETS = (5, 15, 30, 60, 120, 300, 900, 3600, 4 * 3600, 24 * 3600)

INTAKE_SECONDS = Histogram("gateway_intake_seconds", "Time to store an inbound message durably (this process)",
                           ["channel"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))

COUNTERS = {
    "gateway_messages_in": ("Inbound messages by channel and outcome (accepted, duplicate, conflict)",
                            ("channel", "outcome")),
    "gateway_repeat_merges": ("Repeat reports merged into an open case, by reason", ("reason",)),
    "gateway_deadline_breaches": ("Deadlines that passed, by kind", ("deadline",)),
    "gateway_worker_jobs": ("Worker jobs by kind and result (ok, retry, failed)", ("job", "result")),
    "gateway_plugin_errors": ("Exceptions raised inside plugin hooks, by plugin", ("plugin",)),
    "gateway_worker_surges": ("Times a worker began keeping to its share of a core in a surge "
                              "(GATEWAY_WORKER_SURGE_SHARE)", ()),
    "gateway_worker_rested_seconds": ("Seconds workers rested in surges, leaving the CPU to the intake", ()),
    "gateway_replication_waits": ("Waits for Redis replicas before something goes out (GATEWAY_REDIS_WAIT_REPLICAS)",
                                  ("for",)),
}
HISTOGRAMS = {
    "gateway_first_response_seconds": ("Time from a message to the first agent reply, by channel", ("channel",),
                                       FIRST_RESPONSE_BUCKETS),
    "gateway_worker_job_seconds": ("Worker job durations, by kind", ("job",), SECONDS_BUCKETS),
}


def _field(name: str, labels: dict[str, str]) -> str:
    return _named(name, tuple(labels.items()))


@functools.lru_cache(maxsize=4096, typed=True)  # (a worker counts the same few fields for every job)
def _named(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """The field of ``name`` with ``labels`` (in any order: written sorted by label)."""
    return name + "|" + ",".join(f"{k}={v}" for k, v in sorted(labels))


@functools.cache
def _bounds(name: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """A histogram's bucket bounds, and each as its ``le`` label (then "+Inf")."""
    buckets = tuple(HISTOGRAMS[name][2])
    return buckets, (*(str(b) for b in buckets), "+Inf")


def counter_field(name: str, **labels: str) -> str:
    """A counter's field name in the metrics hash."""
    return _field(name, labels)


log = logging.getLogger("gateway.metrics")

#: Seconds between a flusher's writes of its process's tally.
FLUSH_EVERY_S = 1.0


class MetricsFlusher:
    """This process's tally of counts for one Redis connection pool, written to Redis every
    ``FLUSH_EVERY_S`` (one pipeline of ``HINCRBY`` / ``HINCRBYFLOAT``) while ``run`` runs, and
    once more when it is cancelled. A write that fails is kept and tried again next time."""

    def __init__(self, redis: Any, every_s: float = FLUSH_EVERY_S) -> None:
        self.redis = redis
        self.every_s = every_s
        self.tally: dict[tuple[str, str], float] = defaultdict(float)
        self.floats: set[tuple[str, str]] = set()

    def add(self, key: str, field: str, by: float, *, whole: bool = True) -> None:
        self.tally[(key, field)] += by
        if not whole:
            self.floats.add((key, field))

    async def flush(self) -> int:
        """Write the tally (one round trip); answers the fields written."""
        if not self.tally:
            return 0
        taken, self.tally = self.tally, defaultdict(float)
        floats, self.floats = self.floats, set()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (key, field), by in taken.items():
                    if (key, field) in floats:
                        pipe.hincrbyfloat(key, field, by)
                    else:
                        pipe.hincrby(key, field, int(by))
                await pipe.execute()
        except BaseException:
            for (key, field), by in taken.items():  # kept for the next flush
                self.add(key, field, by, whole=(key, field) not in floats)
            raise
        return len(taken)

    async def run(self) -> None:
        """Until cancelled; then a last flush, so a clean stop loses no count."""
        pool = self.redis.connection_pool
        _flushers[id(pool)] = self
        try:
            while True:
                await asyncio.sleep(self.every_s)
                try:
                    await self.flush()
                except Exception as exc:  # noqa: BLE001 - Redis away: kept for the next pass
                    log.warning("metrics flush: %s", type(exc).__name__)
        finally:
            if _flushers.get(id(pool)) is self:
                del _flushers[id(pool)]
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - Redis away at shutdown: nothing more to do
                log.warning("metrics: %d counts not written at stop (%s)", len(self.tally), type(exc).__name__)


#: The running flushers of this process, by the id of the connection pool they write through.
_flushers: dict[int, MetricsFlusher] = {}


def _tally_for(pipe: Any) -> MetricsFlusher | None:
    """The flusher that takes this pipeline's counts: only for a non-transactional pipeline (a
    transaction's counts commit with its change); a flusher itself (``tally_of``'s answer) takes
    them as they are."""
    if isinstance(pipe, MetricsFlusher):
        return pipe
    if not _flushers or getattr(pipe, "is_transaction", True) or getattr(pipe, "explicit_transaction", False):
        return None
    pool = getattr(pipe, "connection_pool", None)
    return _flushers.get(id(pool)) if pool is not None else None


def tally_of(redis: Any) -> MetricsFlusher | None:
    """The flusher running for this client's connection pool, if any: counts made outside a
    transaction may go to its tally instead of a ``HINCRBY`` each (the gateway's intake
    outcomes do)."""
    pool = getattr(redis, "connection_pool", None)
    return _flushers.get(id(pool)) if _flushers and pool is not None else None


def tally_add(redis: Any, keys: Keys | str, name: str, by: float, **labels: str) -> bool:
    """Add to a counter in the tally of this client's flusher (written within a second, no
    command of its own); False, and nothing counted, where no flusher runs for the client."""
    tally = tally_of(redis)
    if tally is None:
        return False
    tally.add(Keys.of(keys).metrics, _field(name, labels), by, whole=isinstance(by, int))  # (a float: HINCRBYFLOAT)
    return True


def incr(pipe: Any, keys: Keys | str, name: str, by: int = 1, **labels: str) -> None:
    """Add to a counter inside a pipeline or on a client (not awaited here), or to a flusher's
    tally. ``keys``: the store's ``Keys``, or the key prefix they are for."""
    tally = _tally_for(pipe)
    if tally is not None:
        return tally.add(Keys.of(keys).metrics, _field(name, labels), by)
    return pipe.hincrby(Keys.of(keys).metrics, _field(name, labels), by)


def observe(pipe: Any, keys: Keys | str, name: str, value: float, **labels: str) -> None:
    """Three counts per observation: the one bucket the value falls in (``_le``, not
    cumulative; ``render`` adds them up), the sum and the count. Incrementing every cumulative
    bucket cost up to 20 commands, a fifth of Redis's work per message (bench/RESULTS.md, load)."""
    buckets, labels_le = _bounds(name)
    key = Keys.of(keys).metrics
    # the first bucket the value is not above (a NaN is above them all)
    bound = labels_le[bisect.bisect_left(buckets, value)] if value == value else "+Inf"
    tally = _tally_for(pipe)
    if tally is not None:
        tally.add(key, _field(name + "_le", {**labels, "le": bound}), 1)
        tally.add(key, _field(name + "_sum", labels), value, whole=False)
        tally.add(key, _field(name + "_count", labels), 1)
        return
    pipe.hincrby(key, _field(name + "_le", {**labels, "le": bound}), 1)
    pipe.hincrbyfloat(key, _field(name + "_sum", labels), value)
    pipe.hincrby(key, _field(name + "_count", labels), 1)


def _parse(fields: dict[bytes, bytes]) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for raw, value in fields.items():
        name, _, label_text = raw.decode().partition("|")
        labels = dict(pair.split("=", 1) for pair in label_text.split(",") if "=" in pair)
        out[name].append((labels, float(value)))
    return out


class _Snapshot:
    """A prometheus_client collector over values fetched from Redis just before."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return iter(self.families)


async def render(store: Any, plugin_errors: dict[str, int]) -> bytes:
    r, k = store.r, store.keys
    own = tally_of(r)
    if own is not None:  # this process's own counts are never a second behind on its /metrics
        await own.flush()
    fields = _parse(await r.hgetall(k.metrics))
    families: list[Any] = []
    for name, (doc, labels) in COUNTERS.items():
        family = CounterMetricFamily(name, doc, labels=list(labels))
        for lab, value in fields.get(name, []):
            family.add_metric([lab.get(x, "") for x in labels], value)
        if name == "gateway_plugin_errors":
            for plugin, count in plugin_errors.items():  # this process's own count, too
                family.add_metric([f"{plugin} (this process)"], count)
        families.append(family)
    for name, (doc, labels, buckets) in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, doc, labels=list(labels))
        series: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: {"b": {}, "sum": 0.0})
        for lab, value in fields.get(name + "_le", []):
            series[tuple(lab.get(x, "") for x in labels)]["b"][lab.get("le", "+Inf")] = value
        for lab, value in fields.get(name + "_sum", []):
            series[tuple(lab.get(x, "") for x in labels)]["sum"] = value
        for key, data in series.items():
            ordered, total = [], 0.0
            for bound in [str(b) for b in buckets] + ["+Inf"]:  # Prometheus buckets are cumulative
                total += data["b"].get(bound, 0.0)
                ordered.append((bound, total))
            family.add_metric(list(key), ordered, data["sum"])
        families.append(family)
    stats = await store.queue_stats()
    depth = GaugeMetricFamily("gateway_queue_depth", "Complaints waiting in each skill queue", labels=["skill"])
    oldest = GaugeMetricFamily("gateway_queue_oldest_age_seconds", "Age of the oldest waiting complaint",
                               labels=["skill"])
    breached = GaugeMetricFamily("gateway_queue_first_response_breached", "Waiting complaints past their "
                                 "first-response deadline", labels=["skill"])
    for q in stats:
        depth.add_metric([q["skill"]], q["depth"])
        oldest.add_metric([q["skill"]], q["oldest_age_seconds"])
        breached.add_metric([q["skill"]], q["deadlines_breached"])
    families += [depth, oldest, breached]
    pending = GaugeMetricFamily("gateway_messages_pending", "Messages stored but not yet processed")
    pending.add_metric([], await r.zcard(k.pending))
    quarantined = GaugeMetricFamily("gateway_quarantine_size", "Inputs in quarantine")
    quarantined.add_metric([], await r.zcard(k.quarantine))
    timers = GaugeMetricFamily("gateway_timers_pending", "Deadline timers waiting to fire")
    timers.add_metric([], await r.zcard(k.timers))
    workers = GaugeMetricFamily("gateway_workers_alive", "Workers with a heartbeat in the last 15 s")
    workers.add_metric([], await r.zcount(k.workers, int(time.time() * 1000) - 15_000, "+inf"))
    lag = GaugeMetricFamily("gateway_imap_sync_lag_seconds", "Seconds since each mailbox was last in sync",
                            labels=["mailbox"])
    now = time.time()
    async for key in r.scan_iter(match=k.imap_synced("*")):
        value = await r.get(key)
        if value:
            lag.add_metric([key.decode().rsplit(":", 1)[-1]], max(0.0, now - int(value) / 1000))
    families += [pending, quarantined, timers, workers, lag]
    registry = CollectorRegistry()
    registry.register(_Snapshot(families))
    return generate_latest(registry) + generate_latest(REGISTRY)
