"""A worker's per-job counts are tallied in the process and written once a second in one round
trip, and once more at a clean stop; counts made inside a transaction are written with it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from router import metrics
from router.store.keys import Keys


async def test_tally_written_by_the_flusher_and_at_stop(redis_url: str, prefix: str) -> None:
    r = Redis.from_url(redis_url)
    key = Keys(prefix).metrics
    flusher = metrics.MetricsFlusher(r, every_s=3600)  # only the stop writes, in this test
    running = asyncio.create_task(flusher.run())
    try:
        await asyncio.sleep(0)  # the flusher registers for this connection pool
        async with r.pipeline(transaction=False) as pipe:
            metrics.incr(pipe, prefix, "gateway_worker_jobs", job="process_message", result="ok")
            metrics.observe(pipe, prefix, "gateway_worker_job_seconds", 0.02, job="process_message")
            metrics.observe(pipe, prefix, "gateway_worker_job_seconds", 0.03, job="process_message")
            assert pipe.command_stack == []  # tallied, not sent
            await pipe.execute()
        tally = metrics.tally_of(r)  # the flusher itself takes counts too (no pipeline needed)
        assert tally is flusher
        metrics.incr(tally, prefix, "gateway_plugin_errors", 2, plugin="mine")
        metrics.observe(tally, prefix, "gateway_worker_job_seconds", 0.5, job="send_reply")
        async with r.pipeline(transaction=True) as pipe:  # with a change: written with it
            metrics.incr(pipe, prefix, "gateway_repeat_merges", reason="similar_text")
            await pipe.execute()
        assert await r.hgetall(key) == {b"gateway_repeat_merges|reason=similar_text": b"1"}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    fields = {k.decode(): v.decode() for k, v in (await r.hgetall(key)).items()}
    assert fields["gateway_worker_jobs|job=process_message,result=ok"] == "1"
    assert fields["gateway_worker_job_seconds_le|job=process_message,le=0.025"] == "1"
    assert fields["gateway_worker_job_seconds_le|job=process_message,le=0.05"] == "1"
    assert fields["gateway_worker_job_seconds_count|job=process_message"] == "2"
    assert abs(float(fields["gateway_worker_job_seconds_sum|job=process_message"]) - 0.05) < 1e-9
    assert fields["gateway_plugin_errors|plugin=mine"] == "2"
    assert fields["gateway_worker_job_seconds_count|job=send_reply"] == "1"
    # no flusher any more: written at once again
    async with r.pipeline(transaction=False) as pipe:
        metrics.incr(pipe, prefix, "gateway_worker_jobs", job="process_message", result="ok")
        await pipe.execute()
    assert await r.hget(key, "gateway_worker_jobs|job=process_message,result=ok") == b"2"
    await r.aclose()


def test_a_value_falls_in_the_first_bucket_it_is_not_above_and_labels_in_any_order_make_one_field() -> None:
    """The bucket an observation counts in (``_le``): the first bound the value is not above, "+Inf"
    past the last one (a NaN too); the labels of a field are written sorted, however given."""
    for name, (_, _, buckets) in metrics.HISTOGRAMS.items():
        for value in (-1, 0, *buckets, *(b + 1e-9 for b in buckets), float("inf"), float("nan")):
            tally = metrics.MetricsFlusher(None)
            metrics.observe(tally, "p:", name, value, channel="app")
            expected = next((str(b) for b in buckets if value <= b), "+Inf")
            assert ("p:metrics", f"{name}_le|channel=app,le={expected}") in tally.tally
    assert metrics.counter_field("m", result="ok", job="j") == metrics.counter_field("m", job="j", result="ok") \
        == "m|job=j,result=ok"
