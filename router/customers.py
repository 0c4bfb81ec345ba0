"""Customers: the contacts linked to one person, how they came to be linked, and their cases.

A contact (``kind:value``, normalised) belongs to at most one customer: the key
``contact:<kind>:<value>`` names the customer (every key is named in router/store/keys.py), and ``customer:<id>:contacts`` lists the
customer's contacts. Links are made automatically when a message arrives (the sender's contact,
and contacts the channel vouches for; see the prepare script in ``router/store/scripts.py``) and by agents
through the API; every change is appended to ``customer:<id>:history``.
"""

from __future__ import annotations

import json
from typing import Any

from router.store import ComplaintStore, Conflict, Keys, NotFound, is_open

from normalizer.ids import ms_to_dt, now_ms
from normalizer.contacts import label
from normalizer.schema import Contact

HISTORY_SHOWN = 200

_LINK_LUA = """
-- KEYS: contact key, customer's contacts, customer's history
-- ARGV: 1 customer id, 2 label, 3 history entry (linked), 4 move ('1'/'0'), 5 history entry (moved
--       away), then head and tail of a customer's keys (the owner's id goes between): 6, 7 contacts;
--       8, 9 history
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return {'already', owner} end
if owner and ARGV[4] ~= '1' then return {'conflict', owner} end
if owner then
  redis.call('SREM', ARGV[6] .. owner .. ARGV[7], ARGV[2])
  redis.call('RPUSH', ARGV[8] .. owner .. ARGV[9], ARGV[5])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
return {'linked', owner or ''}
"""

_UNLINK_LUA = """
-- KEYS: contact key, customer's contacts, customer's history; ARGV: customer id, label, history entry
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
return 1
"""


def _entry(action: str, contact: str, by: str, reason: str, **extra: str) -> str:
    return json.dumps({"at_ms": now_ms(), "action": action, "contact": contact, "by": by, "reason": reason, **extra},
                      ensure_ascii=False)


class Customers:
    def __init__(self, store: ComplaintStore) -> None:
        self.store = store
        self.keys = store.keys

    async def exists(self, customer_id: str) -> bool:
        return bool(await self.store.r.exists(self.keys.customer_contacts(customer_id),
                                              self.keys.customer_history(customer_id)))

    async def contacts(self, customer_id: str) -> list[dict[str, str]]:
        labels = sorted(m.decode() for m in await self.store.r.smembers(self.keys.customer_contacts(customer_id)))
        return [{"kind": lbl.partition(":")[0], "value": lbl.partition(":")[2]} for lbl in labels]

    async def history(self, customer_id: str) -> list[dict[str, Any]]:
        raw = await self.store.r.lrange(self.keys.customer_history(customer_id), -HISTORY_SHOWN, -1)
        items = []
        for entry in raw:
            try:
                item = json.loads(entry)
            except ValueError:
                continue
            item["at"] = ms_to_dt(int(item.pop("at_ms", 0))).isoformat()
            items.append(item)
        return items

    async def cases(self, customer_id: str, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """The customer's open cases (summaries) and how many cases they have had in all."""
        r = self.store.r
        open_ids = [k.decode() for k in await r.hkeys(self.keys.open_cases(customer_id))]
        total = await r.zcard(self.keys.idx("customer", customer_id))
        complaints = await self.store.get_many(open_ids[:limit])
        summaries = [{"id": c.id, "case_number": c.case_number, "status": c.status.value, "category": c.category,
                      "channel": c.channel, "created_at": c.created_at.isoformat(), "repeat_count": c.repeat_count}
                     for c in sorted(complaints, key=lambda c: c.created_at) if is_open(c)]
        return summaries, total

    async def view(self, customer_id: str) -> dict[str, Any]:
        if not await self.exists(customer_id):
            raise NotFound("customer_not_found", f"no customer {customer_id}")
        open_cases, total = await self.cases(customer_id)
        return {"id": customer_id, "contacts": await self.contacts(customer_id), "open_cases": open_cases,
                "cases_total": total, "history": await self.history(customer_id)}

    async def link(self, customer_id: str, contact: Contact, *, by: str, reason: str, move: bool) -> dict[str, Any]:
        """Link ``contact`` to the customer. A contact that is someone else's is moved only when
        ``move`` is set (both customers' histories say so); otherwise ``Conflict``."""
        if not await self.exists(customer_id):
            raise NotFound("customer_not_found", f"no customer {customer_id}")
        lbl = label(contact)
        script = self.store.r.register_script(_LINK_LUA)
        status, owner = (v.decode() if isinstance(v, bytes) else v for v in await script(
            keys=[self.keys.contact(contact), self.keys.customer_contacts(customer_id),
                  self.keys.customer_history(customer_id)],
            args=[customer_id, lbl, _entry("linked", lbl, by, reason), "1" if move else "0",
                  _entry("moved_away", lbl, by, reason, moved_to=customer_id),
                  *Keys.around(self.keys.customer_contacts), *Keys.around(self.keys.customer_history)]))
        if status == "conflict":
            raise Conflict("contact_linked_elsewhere",
                           f"{lbl} belongs to customer {owner}; send \"move\": true to move it here.")
        return {"status": status, "moved_from": owner or None}

    async def unlink(self, customer_id: str, contact: Contact, *, by: str, reason: str) -> None:
        """The contact is no longer this customer's; its next message starts a new customer."""
        lbl = label(contact)
        script = self.store.r.register_script(_UNLINK_LUA)
        done = await script(keys=[self.keys.contact(contact), self.keys.customer_contacts(customer_id),
                                  self.keys.customer_history(customer_id)],
                            args=[customer_id, lbl, _entry("unlinked", lbl, by, reason)])
        if not done:
            raise NotFound("contact_not_linked", f"{lbl} is not a contact of customer {customer_id}")
