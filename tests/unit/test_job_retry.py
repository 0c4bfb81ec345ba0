"""A worker job that meets Redis going away is retried, whatever shape the error takes: redis-py's
own errors, and a connection reset that surfaces as a plain OSError."""

from __future__ import annotations

import pytest
from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from router.worker import instrumented


def failing(exc: BaseException):
    async def job(ctx, *args):
        raise exc
    job.__name__ = "job"
    return instrumented(job)


@pytest.mark.parametrize("exc", [
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    RedisConnectionError("Error 111 connecting"),
    ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"),
])
async def test_redis_going_away_retries_the_job(exc):
    with pytest.raises(Retry):
        await failing(exc)({})


@pytest.mark.parametrize("exc", [ValueError("a bug"), ResponseError("WRONGTYPE Operation against a key")])
async def test_other_failures_fail_the_job(exc):
    with pytest.raises(type(exc)):
        await failing(exc)({})
