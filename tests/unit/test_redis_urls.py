"""Reading Redis addresses and Redis's own words: Sentinel URLs, cluster hash tags, and the
error replies that mean "not now, try again"."""

import asyncio

import pytest
from redis._parsers.base import BaseParser
from redis.asyncio.client import Pipeline
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.redis_pool import (hash_tag, parse_sentinel_url, redis_in_transition, redis_unavailable,
                                transition_code)
from gateway.settings import load_settings


@pytest.mark.parametrize("url, expected", [
    ("redis+sentinel://127.0.0.1:26379/desk", ([("127.0.0.1", 26379)], "desk", 0, None, None)),
    ("redis+sentinel://s1:1,s2:2,s3/desk/3", ([("s1", 1), ("s2", 2), ("s3", 26379)], "desk", 3, None, None)),
    ("redis+sentinel://:p%40ss@s1:1/desk", ([("s1", 1)], "desk", 0, None, "p@ss")),
    ("redis+sentinel://ops:pw@s1:1/desk", ([("s1", 1)], "desk", 0, "ops", "pw")),
])
def test_sentinel_urls(url, expected):
    assert parse_sentinel_url(url) == expected
    assert load_settings({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("prefix, tag", [
    ("cg:", ""), ("{cg}:", "{cg}"), ("desk:{north}:", "{north}"), ("{}:", ""), ("a{}b{x}", ""), ("{a", ""),
])
def test_hash_tags_as_redis_cluster_reads_them(prefix, tag):
    assert hash_tag(prefix) == tag


# What Redis answers while it fails over, restarts or reshards, exactly as it says it (seen from
# a real master turned replica, a replica whose master died, a cluster slot moving), parsed the
# way redis-py parses a reply: some become a class of their own without the code in their text.
TRANSIENT_REPLIES = {
    "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)": "UNBLOCKED",
    "UNBLOCKED client unblocked via CLIENT UNBLOCK": "UNBLOCKED",
    "READONLY You can't write against a read only replica.": "READONLY",
    "READONLY You can't write against a read only replica. script: 7bde4bd468bc3cda10c087ad5f4dfea42d1b4c04, "
    "on @user_script:1.": "READONLY",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": "MASTERDOWN",
    "LOADING Redis is loading the dataset in memory": "LOADING",
    "TRYAGAIN Multiple keys request during rehashing of slot": "TRYAGAIN",
    "MOVED 8640 127.0.0.1:7001": "MOVED",
    "ASK 8640 127.0.0.1:7001": "ASK",
    "CLUSTERDOWN The cluster is down": "CLUSTERDOWN",
    "CLUSTERDOWN Hash slot not served": "CLUSTERDOWN",
    "NOREPLICAS Not enough good replicas to write.": "NOREPLICAS",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.": "BUSY",
    "ERR Error running script (call to f_5b2d): @user_script:1: @user_script: 1: "
    "-READONLY You can't write against a read only replica.": "READONLY",  # Redis 6's words for it
}
REAL_ERRORS = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "BUSYKEY Target key name already exists.",
    "NOSCRIPT No matching script. Please use EVAL.",
    "ERR unknown command 'ASKING2'",
    "ERR value is not an integer or out of range",
    "NOPERM this user has no permissions to run the 'set' command",
    "CROSSSLOT Keys in request don't hash to the same slot",
    "EXECABORT Transaction discarded because of previous errors.",
]


def in_pipeline(error, command=("SET", "k", "v")):
    """The error as redis-py raises it from a pipeline or MULTI (class kept, text annotated)."""
    Pipeline.annotate_exception(None, error, 1, command)
    return error


@pytest.mark.parametrize("reply, code", TRANSIENT_REPLIES.items())
def test_every_reply_of_a_failover_or_restart_means_try_again(reply, code):
    for error in (BaseParser.parse_error(reply), in_pipeline(BaseParser.parse_error(reply))):
        assert transition_code(error) == code, repr(error)
        assert redis_in_transition(error) and redis_unavailable(error)


@pytest.mark.parametrize("reply", REAL_ERRORS)
def test_real_errors_are_not_retried(reply):
    for error in (BaseParser.parse_error(reply), in_pipeline(BaseParser.parse_error(reply)),
                  in_pipeline(BaseParser.parse_error(reply), ("EVALSHA", "x", "1", "k", "MOVED 1 a:1: -READONLY"))):
        assert transition_code(error) == "" and not redis_in_transition(error) and not redis_unavailable(error)


@pytest.mark.parametrize("error", [
    RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    RedisConnectionError("Connection closed by server."),  # EOF in the middle of an answer
    RedisTimeoutError("Timeout connecting to server"),
    BusyLoadingError("Redis is loading the dataset in memory"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    ConnectionRefusedError(111, "Connection refused"),
    asyncio.IncompleteReadError(b"", 10),
])
def test_a_redis_out_of_reach_means_try_again(error):
    assert redis_unavailable(error)


def test_unavailable_is_not_any_error():
    assert not redis_unavailable(ValueError("bad"))
    assert not redis_unavailable(FileNotFoundError(2, "No such file"))
    assert not redis_unavailable(ResponseError("Command # 1 (GET MOVED) of pipeline caused error: WRONGTYPE"))
