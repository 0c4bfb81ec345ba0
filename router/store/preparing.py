"""Loading a message for processing: its record, its sender resolved to a customer and that
customer's open cases, in one round trip (``scripts.PREPARE_LUA``)."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import ResponseError

from normalizer.ids import new_id, now_ms
from normalizer.schema import InboundMessage, MessageStatus
from router.store.base import StoreBase
from router.store.group_commit import GroupCommit
from router.store.keys import Keys

_message_decoder = msgspec.msgpack.Decoder(InboundMessage)


class Preparing(StoreBase):
    def _group_prepare(self) -> GroupCommit:
        """The loads of the jobs that start at the same time, in one call of the script."""
        if self._prepares is None:
            script, k = self._prepare_script, self.keys
            common = [Keys.head(k.contact_label), *Keys.around(k.customer_history), *Keys.around(k.customer_contacts),
                      *Keys.around(k.open_cases), Keys.head(k.contact_lock), Keys.head(k.after_resolved_label)]

            async def call(entries: list[tuple[str, list[Any]]]) -> list[Any]:
                answers = await script(keys=[key for key, _ in entries],
                                       args=[*common[:1], now_ms(), *common[1:], *(a for _, args in entries for a in args)])
                return [ResponseError(answer[1].decode(errors="replace")) if answer and answer[0] == b"error" else answer
                        for answer in answers]  # (one message's own failure: its job's, retried as any)

            self._prepares = GroupCommit(call)
        return self._prepares

    async def prepare(self, mid: str, lock: tuple[str, int] | None = None
                      ) -> tuple[str, InboundMessage | None, dict[str, Any]]:
        """Load message ``mid`` for processing and resolve its sender to a customer (a first
        contact creates one; contacts the channel vouches for join the same customer unless they
        are someone's already), in one round trip.

        Returns (status, message, fields): status ``missing``, ``processed``, ``quarantined`` or
        ``received``; message ``None`` when it is not to be processed or does not decode; fields
        ``channel``, ``customer_id``, ``raw``, ``nodedup`` (an agent split this message off a
        case: open a case of its own), ``open_cases`` (complaint id → fingerprint bytes), ``sender``
        (the sender's ``kind:value``) and ``after_resolved`` (the resolved case the sender's next
        message answers, read under the lock; "" = none, ``None``: no lock taken, not read).

        ``lock``: (token, ms): the sender's lock is taken first (status ``locked``: another holds
        it, nothing else done); the sender's lock key is ``keys.contact_lock(fields["sender"])``.
        """
        result = await self._group_prepare().submit((self.keys.msg(mid), [new_id("cus"), *(lock or ("", ""))]))
        values = [v.decode() if isinstance(v, bytes) and i != 1 else v for i, v in enumerate(result)]
        status = values[0]
        if status != "received" and status != MessageStatus.received.value:
            fields = {"complaint_id": result[1].decode()} if len(result) > 1 else {}
            return status, None, fields
        data, channel, customer = result[1], values[2], values[3]
        flat = result[5] if len(result) > 5 else []
        open_cases = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        fields = {"channel": channel, "customer_id": customer, "raw": data, "nodedup": values[4] == "1",
                  "open_cases": open_cases, "after_resolved": values[6] if lock and len(values) > 6 else None,
                  "sender": values[7] if len(values) > 7 else ""}
        try:
            return status, _message_decoder.decode(data), fields
        except msgspec.DecodeError:
            return status, None, fields


__all__ = ["Preparing"]
