"""The desk's corrections of a category, kept as labelled examples for the next model (issue 19).

An agent who corrects a complaint's category (``PATCH /v1/complaints/{id}`` with a ``reason``)
teaches the categoriser: :func:`record_correction` keeps the complaint's text - personal data
masked with :func:`normalizer.pii.mask_pii` before it is stored - with the category it had, the one
the agent chose, why, who and when, the channel and the language. A retried request records
nothing new (one entry per complaint and correction key). :func:`labelled_records` turns them into
records of the corpus format (``category`` = the corrected one; a complaint corrected twice counts
once, with its latest category), which :mod:`router.understanding.registry` trains on.

The customer is kept as a one-way hash (``desk-<16 hex>``): the corpus's held-out split is by
customer, so a customer's corrections all fall on the same side, and the export names nobody.

Keys (:class:`ModelKeys`, all under the desk's prefix, so one Redis Cluster slot per desk):
``model:corrections`` (hash: correction id -> JSON) and ``model:corrections:order`` (sorted set:
correction id by time), plus the registry's keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import msgspec

from normalizer.categories import CATEGORIES
from normalizer.pii import mask_pii
from router.store.keys import Keys

#: Longest reason kept (characters); the rest is cut.
REASON_MAX = 2000


class ModelKeys:
    """The categoriser's keys, named in the store's key module (``router/store/keys.py``) like every
    other key; this view gives them the short names the registry and corrections use."""

    def __init__(self, keys_or_prefix: "Keys | str") -> None:
        keys = Keys.of(keys_or_prefix)
        self._keys = keys
        self.current = keys.model_current
        self.versions = keys.model_versions
        self.history = keys.model_history
        self.previous = keys.model_previous
        self.artefacts = keys.model_artefacts
        self.training = keys.model_training
        self.corrections = keys.model_corrections
        self.corrections_order = keys.model_corrections_order

    def artefact(self, version: str) -> str:
        """Hash: ``model`` (model.joblib), ``manifest``, ``sha256``, ``corrections_name``, ``corrections``."""
        return self._keys.model_artefact(version)


class Correction(msgspec.Struct, frozen=True, kw_only=True):
    """One correction, as stored. ``text`` and ``reason`` are masked."""

    id: str
    complaint_id: str
    text: str
    from_category: str
    to_category: str
    reason: str
    by: str
    at: datetime
    channel: str
    language: str
    customer: str = ""
    case_number: str | None = None
    formal_complaint: bool = False

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "complaint_id": self.complaint_id, "case_number": self.case_number,
                "from_category": self.from_category, "to_category": self.to_category, "reason": self.reason,
                "by": self.by, "at": self.at.isoformat().replace("+00:00", "Z"), "channel": self.channel,
                "language": self.language, "text": self.text}


_decoder = msgspec.json.Decoder(Correction)


class CorrectionError(ValueError):
    """A correction that cannot be recorded (unknown category, no change, no reason); ``field`` names
    the request field at fault."""

    def __init__(self, message: str, field: str = "category") -> None:
        super().__init__(message)
        self.field = field


def customer_key(customer_id: str, complaint_id: str) -> str:
    """A one-way key for the held-out split: the customer when known, else the complaint."""
    source = customer_id or f"complaint:{complaint_id}"
    return "desk-" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def complaint_text(complaint: Any) -> str:
    """The text the worker categorised: the complaint's first message, as last edited by the customer."""
    messages = list(getattr(complaint, "messages", []) or [])
    if not messages:
        return ""
    first = messages[0]
    text = first.text
    replaced = {first.message_id}
    for message in messages[1:]:
        if message.edit_of in replaced:
            text = message.text
            replaced.add(message.message_id)
    return text


async def record_correction(redis: Any, prefix: "Keys | str", *, complaint_id: str, text: str, from_category: str,
                            to_category: str, reason: str, by: str, channel: str, language: str,
                            customer_id: str = "", case_number: str | None = None, formal_complaint: bool = False,
                            key: str | None = None, at: datetime | None = None) -> tuple[Correction, bool]:
    """Keep one correction; ``(the stored correction, whether it is new)``.

    ``key`` tells corrections of one complaint apart (the request's idempotency key or the history
    event's id); by default the change and the reason, so a retried request records nothing new.
    The text and the reason are masked here, whatever the caller passed."""
    if to_category not in CATEGORIES:
        raise CorrectionError(f"{to_category!r} is not a category ({', '.join(CATEGORIES)})")
    if to_category == from_category:
        raise CorrectionError(f"the complaint is already {to_category}")
    reason = reason.strip()
    if not reason:
        raise CorrectionError("a correction needs a reason", field="reason")
    if key is None:
        key = hashlib.sha256(f"{from_category}>{to_category}>{reason}".encode("utf-8")).hexdigest()[:16]
    keys = ModelKeys(prefix)
    correction = Correction(
        id=f"{complaint_id}:{key}", complaint_id=complaint_id, text=mask_pii(text or ""),
        from_category=from_category, to_category=to_category, reason=mask_pii(reason[:REASON_MAX]), by=by,
        at=(at or datetime.now(timezone.utc)).astimezone(timezone.utc), channel=channel, language=language,
        customer=customer_key(customer_id, complaint_id), case_number=case_number,
        formal_complaint=formal_complaint)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hsetnx(keys.corrections, correction.id, msgspec.json.encode(correction))
        pipe.zadd(keys.corrections_order, {correction.id: int(correction.at.timestamp() * 1000)}, nx=True)
        pipe.hget(keys.corrections, correction.id)
        created, _, stored = await pipe.execute()
    return _decoder.decode(stored), bool(created)


async def record_complaint_correction(redis: Any, prefix: "Keys | str", complaint: Any, *, to_category: str, reason: str,
                                      by: str, key: str | None = None,
                                      at: datetime | None = None) -> tuple[Correction, bool]:
    """:func:`record_correction` for a :class:`normalizer.schema.Complaint` before its category changes."""
    return await record_correction(
        redis, prefix, complaint_id=complaint.id, text=complaint_text(complaint), from_category=complaint.category,
        to_category=to_category, reason=reason, by=by, channel=complaint.channel, language=complaint.language,
        customer_id=complaint.customer_id, case_number=complaint.case_number,
        formal_complaint=complaint.formal_complaint, key=key, at=at)


async def list_corrections(redis: Any, prefix: "Keys | str", *, limit: int = 100, offset: int = 0) -> tuple[list[Correction], int]:
    """Newest first: ``(a page, how many there are)``."""
    keys = ModelKeys(prefix)
    ids = await redis.zrevrange(keys.corrections_order, offset, offset + limit - 1)
    total = await redis.zcard(keys.corrections_order)
    if not ids:
        return [], total
    values = await redis.hmget(keys.corrections, ids)
    return [_decoder.decode(v) for v in values if v], total


async def all_corrections(redis: Any, prefix: "Keys | str") -> list[Correction]:
    """Every correction, oldest first."""
    keys = ModelKeys(prefix)
    found = [_decoder.decode(v) for v in (await redis.hgetall(keys.corrections)).values()]
    return sorted(found, key=lambda c: (c.at, c.id))


def labelled_records(corrections: Iterable[Correction]) -> list[dict[str, Any]]:
    """Corpus-format records (``category`` = the corrected one), one per complaint - its latest
    correction - sorted by id, so the same corrections always make the same file."""
    latest: dict[str, Correction] = {}
    for c in corrections:
        seen = latest.get(c.complaint_id)
        if seen is None or (c.at, c.id) > (seen.at, seen.id):
            latest[c.complaint_id] = c
    records = []
    for c in latest.values():
        if not c.text.strip():
            continue
        records.append({
            "id": f"desk-{c.complaint_id}", "lang": c.language, "channel": c.channel, "customer": c.customer,
            "text": c.text, "category": c.to_category, "formal_complaint": c.formal_complaint, "dup_group": None,
            "source": "desk_correction", "corrected_from": c.from_category,
            "corrected_at": c.at.isoformat().replace("+00:00", "Z"), "note": c.reason,
        })
    records.sort(key=lambda r: r["id"])
    return records


def records_jsonl(records: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


def write_records(records: Sequence[dict[str, Any]], directory: Path) -> Path:
    """The records as a JSONL file named by its content (``desk_corrections-<sha12>.jsonl``): the
    model's version names each file by name and hash, so the same corrections give the same version."""
    data = records_jsonl(records)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"desk_corrections-{hashlib.sha256(data).hexdigest()[:12]}.jsonl"
    if not path.exists() or path.read_bytes() != data:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


async def export_corrections(redis: Any, prefix: "Keys | str", path: Path) -> int:
    """Write every correction as labelled records (corpus JSONL) to ``path``; how many records."""
    records = labelled_records(await all_corrections(redis, prefix))
    path.write_bytes(records_jsonl(records))
    return len(records)


__all__ = ["Correction", "CorrectionError", "ModelKeys", "all_corrections", "complaint_text", "customer_key",
           "export_corrections", "labelled_records", "list_corrections", "record_complaint_correction",
           "record_correction", "records_jsonl", "write_records"]
