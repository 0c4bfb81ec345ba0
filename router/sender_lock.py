"""One message at a time per sender.

``process_message`` holds its sender's lock while it decides what the message is (a follow-up, a
repeat, a new case) and commits it: two messages a customer sends a moment apart must see each
other. The lock is taken by the script that loads the message (``ComplaintStore.prepare``, which
also reads the sender and which resolved case the sender's next message answers) and, when the
message opens a case, let go by the commit's own script (``commit_new_complaint``): no round trip
of its own on that path. Other paths let it go here. The lock holds its holder's token (the
message's id); only its holder renews or releases it (compared inside a script, never GET-then-DEL
from the client).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from router.store import ComplaintStore

RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

_scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _release_script(redis: Any) -> Any:
    found = _scripts.get(redis)
    if found is None:
        found = _scripts[redis] = redis.register_script(RELEASE_LUA)
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

    def key(self) -> str:
        return self.store.keys.contact_lock(self.sender)

    def handed_over(self) -> tuple[str, str] | None:
        """The lock's key and token, for a script that lets it go in its own step (``let_go``
        once that step ran)."""
        return (self.key(), self.token) if self.sender else None

    def let_go(self) -> None:
        """A script let it go: nothing left to release here."""
        self.sender = ""

    async def release(self) -> None:
        if self.sender:
            sender, self.sender = self.sender, ""
            await _release_script(self.store.r)(keys=[self.store.keys.contact_lock(sender)], args=[self.token])


__all__ = ["SenderLock"]
