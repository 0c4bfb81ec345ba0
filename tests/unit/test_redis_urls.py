"""Reading Redis addresses and Redis's own words: Sentinel URLs, cluster hash tags, and the
error replies that mean "not now, try again"."""

import pytest
from redis.exceptions import ConnectionError, ResponseError

from gateway.redis_pool import hash_tag, parse_sentinel_url, redis_in_transition, redis_unavailable
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


@pytest.mark.parametrize("error, transient", [
    (ResponseError("MOVED 8640 127.0.0.1:7001"), True),
    (ResponseError("Command # 1 (ZADD k 1 m) of pipeline caused error: ('MOVED 8640 127.0.0.1:7001',)"), True),
    (ResponseError("CLUSTERDOWN The cluster is down"), True),
    (ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"), True),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    (ResponseError("Command # 1 (GET MOVED) of pipeline caused error: WRONGTYPE"), False),
    (ConnectionError("Error 111 connecting"), True),
])
def test_which_redis_errors_mean_try_again(error, transient):
    assert redis_unavailable(error) is transient
    assert redis_in_transition(error) is (transient and isinstance(error, ResponseError))
