"""``WakeableWorker``: arq's worker, woken through a Redis list as soon as a job is queued, with
arq's job claim done in one script, and riding out Redis failing over instead of exiting.

The process around it (start-up, the job functions, settings) is ``router.worker``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any, Callable, Self, cast

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from arq.worker import Retry, RetryJob, Worker

from normalizer.ids import new_id
from router.pacing import Pacer
from router.redis_pool import make_pool, redis_unavailable, transition_code
from router.store.group_commit import GroupCommit

log = logging.getLogger("gateway.worker")
#: arq's own logger: a job that fails is logged there, in arq's words, whichever path ran it.
arq_log = logging.getLogger("arq.worker")

_CLAIM_JOBS_LUA = """
-- KEYS: 1 queue, then per job: in-progress key, job key, retry key
-- ARGV: 1 now ms, 2 in-progress timeout ms, 3 claim token prefix (the job's number among these
--       follows), 4 how many to claim at most, then the job ids, in the queue's order
-- Claims, in order and up to ARGV[4], each job that is not running elsewhere, still queued and
-- due, and, claimed, does what arq's run_job does first: reads the job's bytes and counts its try
-- (the retry count: set to 1 with its expiry on a first try, incremented after). Answers {job id,
-- score, job bytes (false: none: expired, or a job without a key, see
-- WakeableWorker.implicit_job), try} per job claimed.
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
local room = tonumber(ARGV[4])
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local got = {}
for n, id in ipairs(ids) do
  if #got >= room then break end
  local s = scores[n]
  if s and tonumber(s) <= tonumber(ARGV[1])
     and redis.call('SET', KEYS[n * 3 - 1], ARGV[3] .. n, 'NX', 'PX', ARGV[2]) then
    got[#got + 1] = n
  end
end
if #got == 0 then return {} end
local job_keys = {}
for k, n in ipairs(got) do job_keys[k] = KEYS[n * 3] end
local jobs = redis.call('MGET', unpack(job_keys))
local out = {}
for k, n in ipairs(got) do
  local retry = KEYS[n * 3 + 1]
  local try = 1
  if not redis.call('SET', retry, '1', 'NX', 'EX', 88400) then try = redis.call('INCR', retry) end
  out[k] = {ids[n], scores[n], jobs[k], try}
end
return out
"""

#: Job ids offered to one claim at most (Lua's unpack takes ~8,000 values; a worker with more
#: room than this claims in several calls).
CLAIM_MOST = 1000
#: Ids a claim is offered beyond its room at least (see WakeableWorker.start_jobs).
CLAIM_MARGIN_LEAST = 8

_FINISH_JOBS_LUA = """
-- KEYS: 1 queue, then per job: in-progress, retry and job keys; ARGV: the job ids
-- The jobs done with (as many as finished together): their keys gone, out of the queue.
redis.call('DEL', unpack(KEYS, 2))
redis.call('ZREM', KEYS[1], unpack(ARGV))
return 1
"""

#: The claim's answer to the first thing arq's run_job asks (job bytes, try, the expiry's answer),
#: set in the job's own task until that question is asked.
_claimed_job: ContextVar[tuple[Any, ...] | None] = ContextVar("claimed_job", default=None)


class _ClaimedJob:
    """arq's run_job begins with one transaction: GET the job, INCR and EXPIRE its retry count.
    The claim script did all three; this answers that transaction from what it returned, once."""

    def __init__(self, answer: tuple[Any, ...]) -> None:
        self.answer = answer

    def pipeline(self, transaction: bool = True) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, *args: Any) -> None:
        pass

    def incr(self, *args: Any) -> None:
        pass

    def expire(self, *args: Any) -> None:
        pass

    async def execute(self) -> list[Any]:
        _claimed_job.set(None)  # every later use of the pool in this job is the real one
        return list(self.answer)


_FREE_CLAIM_LUA = """
-- KEYS: in-progress key; ARGV: the claim token that set it
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class WakeableWorker(Worker):
    """An arq worker that the gateway wakes through a Redis list as soon as it queues a job.

    arq polls its queue every ``poll_delay`` (0.5 s by default), which alone puts up to half a
    second between intake and routing. Here the worker blocks on ``BLPOP wake`` with the poll
    delay as timeout: a new job starts within a round trip, and the poll still runs when no
    wake-up comes (jobs deferred into the future, retries).
    """

    def __init__(self, *args: Any, wake_key: str, redis_url: str, slot_key: str = "",
                 implicit_job: Callable[[str, int], bytes | None] | None = None, pacer: Pacer | None = None,
                 claim_gap: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The least time (s) between two claims that took jobs (see ``_iteration``); none in a
        #: burst run, which only works through what is queued.
        self.claim_gap = 0.0 if self.burst else claim_gap
        #: Loop time before which the next poll does not start (the last poll that took jobs + the gap).
        self._next_claim = 0.0
        #: Jobs started by this worker's claims (a poll that started none sets no gap).
        self._started = 0
        #: Rests in a surge (router.pacing): told how late each claim's jobs were, asked before each
        #: poll. None, and in a burst run (which only works through what is queued): never rests.
        self.pacer = None if self.burst else pacer
        #: The bytes of a queued job that has no job key (a message's job: its id says what it
        #: runs), from its id and score; None: none such (the job expired, as arq has it).
        self.implicit_job = implicit_job
        self.wake_key = wake_key
        self.slot_key = slot_key  # the key prefix: its Redis Cluster slot is where this desk lives
        self.redis_url = redis_url
        self._slot_free = asyncio.Event()
        self._token_prefix = new_id("w") + ":"  # claims: <this worker>:<n>
        self._claims = 0
        self._claimed: dict[str, tuple[str, float]] = {}  # job id → (claim token, loop time before the claim)
        self._loaded: dict[str, tuple[Any, ...]] = {}  # job id → what its claim read for run_job
        if self.allow_abort_jobs:
            raise ValueError("WakeableWorker never aborts jobs")  # run_job's first transaction would differ
        self._freeing: set[asyncio.Task[None]] = set()
        #: The last poll filled every free slot and left due jobs behind (see start_jobs).
        self._more_due = False
        #: Told to stop: a claim is no longer freed against a Redis that is away (its key's expiry
        #: frees it), so a stop never waits for Redis.
        self._stopping = False
        #: How many ids a claim is offered beyond its room (see start_jobs): a worker's full set
        #: at first, then twice what the last claim passed over (running elsewhere, or not due
        #: any more), at least CLAIM_MARGIN_LEAST.
        self._margin = self.max_jobs
        #: What a poll reads of the queue at most: arq's read limit (``queue_read_limit``, by
        #: default five times the worker's set), read in full only while reads come back full of
        #: ids this worker cannot take (see ``_read_limit``).
        self._read_most = self.queue_read_limit
        #: Ids read beyond ``max_jobs + _margin``: while full reads leave room, a read twice the
        #: last (up to ``_read_most``); else 0.
        self._read_more = 0

    def handle_sig(self, signum: Any) -> None:
        self._stopping = True
        super().handle_sig(signum)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs with its claim (WATCH / EXISTS / ZSCORE / MULTI per job, then run_job's
        GET / INCR / EXPIRE) done for every job it has room for in one script: one round trip per
        poll, not two or three per job. Jobs this worker is already running stay at the head of
        the queue until they finish; they are skipped without asking Redis.

        Jobs other workers are running stay at the head of the queue too, and their claims fail:
        each claim is offered more ids than there is room for (``_margin`` more: twice as many as
        the last claim passed over, a worker's full set at first) and, while room is left, the
        next ids listed are offered in another claim. A lone worker, whose own jobs are skipped
        here, so offers a few ids more than its room, not a full set more (each id offered is
        three keys to pack, send and look at)."""
        tasks = self.tasks
        wanted = [j for j in map(bytes.decode, job_ids) if j not in tasks]  # (no Python frame an id)
        if not wanted and self.pacer is not None:
            self.pacer.claimed(0.0)  # nothing due but what this worker runs: not behind
        read_full = len(job_ids) >= self.queue_read_limit
        offered = 0
        while offered < len(wanted) and self.job_counter < self.max_jobs:
            room = self.max_jobs - self.job_counter
            chunk = wanted[offered:offered + min(room + self._margin, CLAIM_MOST)]
            offered += len(chunk)
            taken = await self._claim(chunk, min(room, len(chunk)))
            if taken == room:
                # Every slot filled and due jobs may be left: the next poll is due as soon as a
                # slot frees, not at the next wake-up (none comes for a backlog: the gateway wakes
                # the worker as it queues, and a backlog was queued before).
                self._more_due = offered < len(wanted) or len(chunk) > room
                self._read_more = 0
                return
        # Room left after every id read was offered: the read stopped at jobs this worker cannot
        # take (running elsewhere), or the queue had no more due. A full read reads more next
        # time, at once; up to arq's limit, past which arq never looked either.
        if read_full and self.queue_read_limit < self._read_most and self.job_counter < self.max_jobs:
            self._read_more = max(0, 2 * self.queue_read_limit - self.max_jobs - self._margin)  # twice the last
            self._more_due = True
        else:
            self._read_more = 0

    def _read_limit(self) -> int:
        """How many due ids the next poll reads: this worker's own running jobs (still queued until
        they finish), its room and the claim's margin, which is its full set
        (``job_counter + room = max_jobs``) plus ``_margin``; more after full reads that left room
        (``_read_more``). arq read ``queue_read_limit`` (250 by default) on every poll: a lone
        worker draining a backlog was sent ~250 ids to take the few its finished jobs had freed."""
        return min(self._read_most, self.max_jobs + self._margin + self._read_more)

    async def _claim(self, wanted: list[str], room: int) -> int:
        """One claim of up to ``room`` of ``wanted`` (in order); their jobs started. Answers how
        many were taken."""
        for _ in range(room):  # (room for each: never waits)
            await self.sem.acquire()
        self.job_counter += room
        first = self._claims + 1
        self._claims += len(wanted)
        prefix = f"{self._token_prefix}{first}."  # each in-progress key's value: ours, not another's
        claimed_at = self.loop.time()  # no later than the in-progress keys' start
        answers: list[Any] = []
        try:
            answers = await self._claim_jobs(
                keys=[self.queue_name, *(key for job_id in wanted for key in (
                    in_progress_key_prefix + job_id, job_key_prefix + job_id, retry_key_prefix + job_id))],
                args=[timestamp_ms(), int(self.in_progress_timeout_s * 1000), prefix, room, *wanted],
            )
        except BaseException:  # Redis away, the claims may have been made: give the slots back
            for n, job_id in enumerate(wanted, 1):  # (each blip kept one for good: after max_jobs, no job was taken)
                self._freeing.add(self.loop.create_task(self._free(job_id, f"{prefix}{n}", claimed_at)))
            raise
        finally:
            for _ in range(room - len(answers)):
                self.job_counter -= 1
                self.sem.release()
        if answers and self.pacer is not None:
            dues = [int(score) / 1000 for _, score, _, _ in answers]
            self.pacer.claimed(time.time() - min(dues), dues)
        last = 0  # the place (1 first) of the last id taken among those offered
        for raw_id, score, job, job_try in answers:
            job_id = raw_id.decode()
            if job is None and self.implicit_job is not None:
                job = self.implicit_job(job_id, int(score))
            last = wanted.index(job_id) + 1
            self._started += 1
            self._claimed[job_id] = (f"{prefix}{last}", claimed_at)
            self._loaded[job_id] = (job, int(job_try), True)
            task = self.loop.create_task(self.run_job(job_id, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        # passed over: ids before the last taken that were not taken; all not taken, when the
        # claim had fewer than room to take
        passed_over = (last if len(answers) == room else len(wanted)) - len(answers)
        self._margin = min(self.max_jobs, max(CLAIM_MARGIN_LEAST, 2 * passed_over))
        return len(answers)

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run_job. When Redis fails over under the job's own start or finish (the job's
        function turns Redis errors into a retry itself), the job is freed for the next poll
        instead of waiting for its in-progress key to expire (job timeout + 10 s); it is safe to
        run again, like every job here. The job's bytes and try come from its claim."""
        loaded = self._loaded.pop(job_id, None)
        try:
            if loaded is None or not await self._run_claimed(job_id, score, loaded):
                if loaded is not None:
                    _claimed_job.set(loaded)
                await super().run_job(job_id, score)
        except Exception as exc:  # noqa: BLE001 - only Redis's "not now" is ridden out
            if not redis_unavailable(exc):
                raise
            log.warning("job %s met Redis failing over at its start or finish; it runs again shortly", job_id)
            await self._free(job_id, *self._claimed[job_id])
        finally:
            self._claimed.pop(job_id, None)

    async def _run_claimed(self, job_id: str, score: int, loaded: tuple[Any, ...]) -> bool:
        """arq's run_job for the usual job (its bytes read by the claim, its function known, tries
        left, no result kept, no job hooks), with the same outcomes: the function runs in this task
        under the job's timeout, not in a task of its own awaited through ``wait_for`` (a waiter, a
        timer and callbacks) with its finish in a third, ``shield``ed, task; nor are its arguments
        made into the text of two log lines that arq's logger, at WARNING here, drops. ~20 of the
        ~65 µs a job's claim, run and finish cost the worker (bench/RESULTS.md). False, nothing
        done: arq's run_job takes the job (expired, undecodable, unknown function, a cron job, out
        of tries, a try count raised at enqueue, results kept, hooks, and arq's logger at INFO:
        its lines for each job are then wanted, as with ``GATEWAY_LOG_LEVEL=DEBUG``)."""
        job, job_try, _ = loaded
        if not job or self.keep_result_s or self.keep_result_forever or self.on_job_start or self.on_job_end \
                or self.after_job_end or arq_log.isEnabledFor(logging.INFO):
            return False
        try:
            name, args, kwargs, enqueue_job_try, enqueue_time_ms = deserialize_job_raw(
                job, deserializer=self.job_deserializer)
        except SerializationError:
            return False
        function = self.functions.get(name)
        if function is None or hasattr(function, "next_run") or (enqueue_job_try and enqueue_job_try > job_try) \
                or job_try > (self.max_tries if function.max_tries is None else function.max_tries) \
                or function.keep_result_s or function.keep_result_forever:
            return False
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "enqueue_time": ms_to_datetime(enqueue_time_ms),
               "score": score}
        finish, incr_score = False, None
        start_ms = timestamp_ms()
        task = asyncio.current_task()
        stops = task.cancelling() if task is not None else 0
        try:
            async with asyncio.timeout(self.job_timeout_s if function.timeout_s is None else function.timeout_s):
                await function.coroutine(ctx, *args, **kwargs)
            if task is not None and task.cancelling() > stops:
                # a stop the function swallowed: run again, as arq's wait_for (which raises the
                # outer cancellation whatever the function answered) has it
                raise asyncio.CancelledError
        except (Exception, asyncio.CancelledError) as e:  # noqa: BLE001 - arq's branches, less aborts (never here)
            if self.retry_jobs and isinstance(e, Retry):
                incr_score = e.defer_score + (timestamp_ms() - score) if e.defer_score else e.defer_score
                self.jobs_retried += 1
            elif self.retry_jobs and isinstance(e, (asyncio.CancelledError, RetryJob)):
                self.jobs_retried += 1  # (run again: its in-progress mark goes, it stays queued)
            else:
                extra = getattr(e, "extra", None)
                try:
                    extra = extra() if callable(extra) else extra
                except Exception:  # noqa: BLE001 - (arq counts the job failed then too)
                    extra = None
                arq_log.exception("%6.2fs ! %s failed, %s: %s", (timestamp_ms() - start_ms) / 1000,
                                  f"{job_id}:{name}", e.__class__.__name__, e, extra={"extra": extra})
                finish = True
                self.jobs_failed += 1
            await asyncio.shield(self.finish_job(job_id, finish, None, None, False, incr_score, None))
            return True
        self.jobs_complete += 1
        # (not shielded: a stop that cancels this task now still sends the finish, which the group
        # commit holds; had it not gone out, the job would run again, as every job may)
        await self._finish(job_id)
        return True

    async def _free(self, job_id: str, token: str, claimed_at: float) -> None:
        """Remove this claim's in-progress key (only if it is still this claim's), trying while
        Redis is away; after the key's own expiry there is nothing left to free."""
        try:
            while self.loop.time() < claimed_at + self.in_progress_timeout_s and not self._stopping:
                try:
                    await self._free_claim(keys=[in_progress_key_prefix + job_id], args=[token])
                    return
                except Exception as exc:  # noqa: BLE001
                    if not redis_unavailable(exc):
                        raise
                    await asyncio.sleep(1)
        finally:
            self._freeing.discard(asyncio.current_task())  # type: ignore[arg-type]

    @property
    def pool(self) -> ArqRedis:
        """arq's pool; in a job's task before run_job's first transaction, that transaction
        answered from the job's claim."""
        loaded = _claimed_job.get()
        return cast(ArqRedis, self._pool if loaded is None else _ClaimedJob(loaded))

    async def main(self) -> None:  # mirrors arq.Worker.main, with BLPOP in place of sleep
        if self._pool is None:
            self._pool = ArqRedis(
                make_pool(self.redis_url, socket_connect_timeout=2, socket_keepalive=True,
                          max_connections=self.max_jobs * 2 + 20, follow_slot_of=self.slot_key),
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self._claim_jobs = self.pool.register_script(_CLAIM_JOBS_LUA)
        self._free_claim = self.pool.register_script(_FREE_CLAIM_LUA)
        finish_jobs = self.pool.register_script(_FINISH_JOBS_LUA)

        async def finish(job_ids: list[str]) -> list[Any]:
            await finish_jobs(keys=[self.queue_name, *(key for job_id in job_ids for key in (
                in_progress_key_prefix + job_id, retry_key_prefix + job_id, job_key_prefix + job_id))], args=job_ids)
            return [None] * len(job_ids)

        self._finishing = GroupCommit(finish)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            try:
                if await self._iteration():
                    return None
            except Exception as exc:  # noqa: BLE001 - only Redis's "not now" is ridden out
                if not redis_unavailable(exc):
                    raise
                # Redis restarting or failing over (the wake-up BLPOP ended with UNBLOCKED, a write
                # met READONLY, a reset, a job's own claim or finish failed): keep the process and
                # its running jobs, poll again shortly; arq's own loop would end the worker here
                # (what is logged of a Redis reply is its transition code, never its text)
                log.warning("redis unavailable (%s); polling again in 1 s",
                            transition_code(exc) or type(exc).__name__)
                await asyncio.sleep(1)

    async def _iteration(self) -> bool:
        """One poll; True when a burst run is done.

        A poll that took jobs is followed by the next no sooner than ``claim_gap`` later: what is
        queued meanwhile (at 500 messages a second, ~10 jobs in 20 ms) is claimed together, and
        the jobs go through each step together, one Redis call a step (``GroupCommit``) and one
        batch of predictions, where jobs claimed one or two at a time paid a call per step each. A
        message that finds the worker idle (its last claim took nothing, or was longer ago than
        the gap) is claimed at once, and so is a backlog (the last poll filled every slot and
        left due jobs). Measured on two cores (bench/RESULTS.md, twenty-sixth pass):
        at 300 messages a second the worker's CPU per message 2.56 -> 1.96 ms with a 20-ms gap
        (alternated rounds), and at 500 a second one worker keeps up (without it, seconds behind)."""
        if self.pacer is not None:
            await self.pacer.rest()
        if self.claim_gap:
            wait = self._next_claim - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        self.queue_read_limit = self._read_limit()
        started, polled_at = self._started, self.loop.time()
        await self._poll_iteration()
        # (a poll that filled every slot and left due jobs behind: a backlog, whose claims take
        # the slots as they free, many jobs in flight at every step; the gap would only hold them)
        self._next_claim = polled_at + self.claim_gap if self._started != started and not self._more_due else 0.0
        if self.burst:
            if 0 <= self.max_burst_jobs <= self._jobs_started():
                await asyncio.gather(*self.tasks.values())
                return True
            if await self.pool.zcard(self.queue_name) == 0:
                await asyncio.gather(*self.tasks.values())
                return True
        if self.job_counter >= self.max_jobs:
            # at capacity with work waiting: poll again as soon as a slot frees, not after
            # the poll delay (which left the worker idle while draining a backlog)
            await self._until_a_slot_frees()
        elif not self._more_due:
            await self.pool.blpop([self.wake_key], timeout=self.poll_delay_s)
        # (else: the last poll left due jobs for want of room, and room has freed since its
        # claim: poll again now. Waiting for a wake-up there held a backlog's drain to one
        # claim per poll delay, ~100 jobs a second, the worker idle most of the time.)
        self._more_due = False  # (read once: a poll that starts no claim never leaves it set)
        return False

    async def _until_a_slot_frees(self) -> None:
        """Until a running job ends, or the poll delay has passed. ``asyncio.timeout``, not
        ``wait_for``: on Python 3.11 a ``wait_for`` cancelled in the turn its event is set returns
        as if not cancelled (CPython gh-86296), and the worker, stopped then, polled on for good."""
        self._slot_free.clear()
        try:
            async with asyncio.timeout(self.poll_delay_s):
                await self._slot_free.wait()
        except TimeoutError:
            pass

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_free.set()

    # arq's finish_job / finish_failed_job, less the ZREM of its global abort set: this worker
    # never aborts jobs, and that key (arq:abort, no hash tag) lives outside the desk's Redis
    # Cluster slot, where it would break the transaction.

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None, result_timeout_s: float | None,
                         keep_result_forever: bool, incr_score: int | None, keep_in_progress: float | None) -> None:
        if finish and not result_data and keep_in_progress is None:  # the usual end: one script
            return await self._finish(job_id)
        async with self.pool.pipeline(transaction=True) as tr:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, int(keep_in_progress * 1000))
            if finish:
                if result_data:
                    tr.set(result_key_prefix + job_id, result_data,
                           px=None if keep_result_forever or result_timeout_s is None else int(result_timeout_s * 1000))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            await tr.execute()

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await self._finish(job_id)  # keep_result=0: no result is kept

    async def _finish(self, job_id: str) -> None:
        """The job done with: its in-progress mark, retry count and bytes gone, out of the queue
        (with the other jobs that finish at the same time: one script call for all)."""
        await self._finishing.submit(job_id)


__all__ = ["WakeableWorker"]
