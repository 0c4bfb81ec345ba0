"""A Redis lock that only its holder can renew or release: the key holds a random token, and
renewing or releasing compares it inside one script (never GET-then-DEL from the client).

Internal: not part of the plugin kit (``plugins.kit``, the one stable module a plugin imports
from); the built-in channels that still use it are tied to this release.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


class RedisLock:
    _ACQUIRE = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
                "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0")
    _RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

    def __init__(self, redis: Any, key: str, ttl_ms: int, token: str | None = None) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = token or os.urandom(12).hex()

    async def acquire(self) -> bool:
        """Take the lock, or extend it when this holder has it already."""
        return bool(await self.redis.eval(self._ACQUIRE, 1, self.key, self.token, self.ttl_ms))

    async def wait(self, timeout_s: float, poll_s: float = 0.02) -> bool:
        """Try until ``timeout_s`` has passed; answers whether the lock is held."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await self.acquire():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    async def renew(self) -> bool:
        return bool(await self.redis.eval(self._RENEW, 1, self.key, self.token, self.ttl_ms))

    async def release(self) -> None:
        await self.redis.eval(self._RELEASE, 1, self.key, self.token)
