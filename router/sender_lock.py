"""One message at a time per sender, taken in one round trip.

``process_message`` holds its sender's lock while it decides what the message is (a follow-up, a
repeat, a new case) and commits it: two messages a customer sends a moment apart must see each
other. Taking the lock is one script that also reads what the step needs next from the same
sender: the message's sender (the lock's name) and which resolved case the sender's next message
answers (survey or reopening). Before, that was three round trips: the sender, the lock, the
resolved case. The lock holds a random token; only its holder renews or releases it (compared
inside a script, never GET-then-DEL from the client).
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from typing import Any

from router.store import ComplaintStore, Keys

TAKE_LUA = """
-- KEYS: 1 the message record; ARGV: 1 lock key head, 2 after-resolved key head (the sender's
-- kind:value follows each), 3 token, 4 lock ms. Answers {sender} (the record names none),
-- {sender, 0} (another holds the lock), or {sender, 1, the resolved case id or ''}.
local c = redis.call('HGET', KEYS[1], 'contact')
if not c or c == '' then return {''} end
local lock = ARGV[1] .. c
if not redis.call('SET', lock, ARGV[3], 'NX', 'PX', ARGV[4]) then
  if redis.call('GET', lock) ~= ARGV[3] then return {c, 0} end
  redis.call('PEXPIRE', lock, ARGV[4])
end
return {c, 1, redis.call('GET', ARGV[2] .. c) or ''}
"""

RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

_scripts: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _registered(redis: Any) -> tuple[Any, Any]:
    found = _scripts.get(redis)
    if found is None:
        found = _scripts[redis] = (redis.register_script(TAKE_LUA), redis.register_script(RELEASE_LUA))
    return found


@dataclass
class Taken:
    """What taking the lock answered."""

    #: The sender's ``kind:value`` ("": the message record names none: nothing to lock).
    sender: str
    held: bool
    #: The resolved case the sender's next message answers ("" = none); read under the lock.
    after_resolved: str = ""


class SenderLock:
    def __init__(self, store: ComplaintStore, message_id: str, ttl_ms: int) -> None:
        self.store = store
        self.message_id = message_id
        self.ttl_ms = ttl_ms
        self.token = os.urandom(12).hex()
        self.sender = ""

    async def take(self) -> Taken:
        """Take the lock (or extend it when this holder has it already)."""
        keys = self.store.keys
        take, _ = _registered(self.store.r)
        answer = await take(keys=[keys.msg(self.message_id)],
                            args=[Keys.head(keys.contact_lock), Keys.head(keys.after_resolved_label), self.token,
                                  self.ttl_ms])
        sender = answer[0].decode() if answer[0] else ""
        self.sender = sender
        if not sender:
            return Taken("", False)
        if not int(answer[1]):
            return Taken(sender, False)
        return Taken(sender, True, answer[2].decode() if answer[2] else "")

    async def release(self) -> None:
        if self.sender:
            _, release = _registered(self.store.r)
            await release(keys=[self.store.keys.contact_lock(self.sender)], args=[self.token])


__all__ = ["SenderLock", "Taken"]
