"""One message at a time per sender.

``process_message`` holds its sender's lock while it decides what the message is (a follow-up, a
repeat, a new case) and commits it: two messages a customer sends a moment apart must see each
other. The lock is taken by the script that loads the message (``ComplaintStore.prepare``, which
also reads the sender and which resolved case the sender's next message answers) and, when the
message opens a case, held until its acknowledgement went out (so that an answer to the sender's
next message never overtakes it), then let go by the script that records the acknowledgement's
delivery (``held_as``), or with the other locks the process lets go at the same time (one
script). The lock holds its holder's token (the
message's id); only its holder renews or releases it (compared inside a script, never GET-then-DEL
from the client).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from router.store import ComplaintStore
from router.store.group_commit import GroupCommit

RELEASE_LUA = """
-- KEYS: senders' locks; ARGV: their holders' tokens, in the same order. Each lets go only by its holder.
local held, mine = redis.call('MGET', unpack(KEYS)), {}
for n, key in ipairs(KEYS) do
  if held[n] == ARGV[n] then mine[#mine + 1] = key end
end
if #mine > 0 then redis.call('DEL', unpack(mine)) end
return #mine
"""

_groups: weakref.WeakKeyDictionary[Any, GroupCommit] = weakref.WeakKeyDictionary()


def _releases(redis: Any) -> GroupCommit:
    found = _groups.get(redis)
    if found is None:
        script = redis.register_script(RELEASE_LUA)

        async def call(entries: list[tuple[str, str]]) -> list[Any]:
            await script(keys=[key for key, _ in entries], args=[token for _, token in entries])
            return [None] * len(entries)

        found = _groups[redis] = GroupCommit(call)
    return found


class SenderLock:
    def __init__(self, store: ComplaintStore, ttl_ms: int, token: str = "") -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        #: The holder's token. ``process_message`` uses the message's id: a later try of the same
        #: message takes back a lock an earlier try left held (it died, or lost the answer that
        #: told it the lock was taken) at once, instead of waiting for the lock's expiry.
        self.token = token or os.urandom(12).hex()
        #: The sender's ``kind:value`` once the lock is held ("": not held).
        self.sender = ""

    def take_with(self) -> tuple[str, int]:
        """What ``ComplaintStore.prepare`` takes the lock with."""
        return self.token, self.ttl_ms

    def held(self, sender: str) -> None:
        """``prepare`` took it (``sender`` "": the record names no sender, nothing locked)."""
        self.sender = sender

    def forget(self) -> None:
        """Not to be let go by this holder (let go already by a script of its own, or left to its
        expiry)."""
        self.sender = ""

    def held_as(self) -> tuple[str, str] | None:
        """The lock's key and this holder's token while it is held (None: not held): what a script
        that lets it go among its own writes takes (``record_delivery``); ``forget`` it once that
        script ran (until then, ``release`` still lets it go)."""
        return (self.store.keys.contact_lock(self.sender), self.token) if self.sender else None

    async def release(self) -> None:
        """Let it go, with the other locks this process lets go at the same time (one script)."""
        held = self.held_as()
        if held is not None:
            self.sender = ""
            await _releases(self.store.r).submit(held)


__all__ = ["SenderLock"]
