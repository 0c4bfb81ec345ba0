"""The pool's connections pack commands with hiredis: the same bytes as redis-py's own packer,
the same refusals."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from router.redis_pool import make_pool


def test_hiredis_packing_sends_what_redis_py_would() -> None:
    ours = make_pool("redis://127.0.0.1:1/0").make_connection()
    theirs = Connection(host="127.0.0.1", port=1)
    for command in [("SET", "k", "中文", "EX", 10), ("CONFIG GET", "maxmemory"), (b"HINCRBYFLOAT", b"h", "f", 0.1),
                    ("EVALSHA", "ab" * 20, 2, b"k1", "k2", 10**20, -1.5e-7, memoryview(b"raw"))]:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command)), command
    assert b"".join(ours.pack_commands([("GET", "a"), ("SET", "b", 1)])) == \
        b"".join(theirs.pack_commands([("GET", "a"), ("SET", "b", 1)]))
    for bad in (True, None):
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", bad)
