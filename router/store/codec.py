"""How a complaint is stored: JSON without its empty fields, Zstandard-compressed; and what is kept
beside it in ``delivery:<cid>`` so that it is written without rewriting the complaint — its
replies' delivery states and its incident link — merged back in when it is read."""

from __future__ import annotations

import functools
import threading
import types
import typing
import zlib
from datetime import datetime, timezone
from typing import Any

import msgspec
import zstandard

from normalizer.schema import Complaint, HistoryEvent

#: The first byte of a stored complaint: Zstandard (``ZSTD``, what is written), zlib (``COMPRESSED``,
#: what earlier versions wrote: still read), else plain JSON (``{``).
ZSTD = b"s"
COMPRESSED = b"z"
#: What reading a stored complaint that is not one raises.
UNDECODABLE = (msgspec.DecodeError, zlib.error, zstandard.ZstdError)
#: The field of ``delivery:<cid>`` that links the complaint to its incidents, a JSON list of
#: ``encode_incident_link``'s, the last its incident (reply ids never start with "~"): a complaint
#: joins an incident in the script that adds it to the incident, without a read-modify-write of
#: the complaint (a provider's outage links every new complaint).
INCIDENT_LINK = "~incident"
_INCIDENT_LINK = INCIDENT_LINK.encode()

_json_encoder = msgspec.json.Encoder()
_complaint_decoder = msgspec.json.Decoder(Complaint)
class _Zstd(threading.local):
    """This thread's compressor and decompressor (python-zstandard's are for one thread at a time),
    made on the thread's first use: level 1, the frame's content size written (the reader needs
    no size limit of its own)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def _stored_type(annotation: Any) -> Any:
    """``annotation`` with every Struct type in it replaced by its stored form."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _stored_struct(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or not args:
        return annotation
    stored = tuple(_stored_type(a) for a in args)
    if stored == args:
        return annotation
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[stored]
    return origin[stored]


@functools.cache
def _stored_struct(kind: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A Struct type with ``kind``'s fields, their defaults and their order, that leaves out of its
    encoding every field holding its default (None, an empty list or dict, a default value): what
    decoding as ``kind`` gives back whole. A complaint is made one of these with
    ``msgspec.convert(..., from_attributes=True)`` and encoded, all in C: 3x faster than walking
    its ``to_builtins`` dict for the empty fields (~9 against ~25 µs a corpus complaint here)."""
    fields: list[Any] = []
    for field in msgspec.structs.fields(kind):
        annotation = _stored_type(field.type)
        if field.required:
            fields.append((field.name, annotation))
        elif field.default_factory is not msgspec.NODEFAULT:
            fields.append((field.name, annotation, msgspec.field(default_factory=field.default_factory)))
        else:
            fields.append((field.name, annotation, field.default))
    return msgspec.defstruct(f"Stored{kind.__name__}", fields, kw_only=True, omit_defaults=True,
                             module=__name__)


_StoredComplaint = _stored_struct(Complaint)


def encode_complaint(complaint: Complaint, replace: dict[str, str] | None = None) -> bytes:
    """A complaint as stored: JSON without the fields that hold their defaults (``_stored_struct``),
    Zstandard-compressed at level 1 (under half of the plain JSON; Redis memory per open complaint is
    a design goal). zlib at its fastest level made the same size at ~5x the CPU (~40 against ~9 µs a
    2.4 KB complaint here, twice a message: bench/RESULTS.md). ``replace`` substitutes text (the case
    number for its placeholder) before compression. (Earlier versions left out only the None and
    empty fields: both read back the same.)"""
    data = _json_encoder.encode(msgspec.convert(complaint, _StoredComplaint, from_attributes=True))
    for old, new in (replace or {}).items():
        data = data.replace(old.encode(), new.encode())
    return ZSTD + _zstd.compressor.compress(data)


def decode_complaint(data: bytes) -> Complaint:
    """A stored complaint, whichever of the three forms it was written in (``UNDECODABLE`` if none)."""
    first = data[:1]
    if first == ZSTD:
        data = _zstd.decompressor.decompress(data[1:])
    elif first == COMPRESSED:
        data = zlib.decompress(data[1:])
    return _complaint_decoder.decode(data)


def encode_delivery(state: dict[str, Any]) -> bytes:
    """A reply's delivery state as kept in ``delivery:<cid>`` (fields that are None left out)."""
    return _json_encoder.encode({k: v for k, v in state.items() if v is not None})


def encode_incident_link(incident_id: str, at: datetime) -> bytes:
    """One incident link of a complaint (``INCIDENT_LINK`` of ``delivery:<cid>`` holds the list of
    them, appended in Redis: ``scripts.INCIDENT_LINK_FN``)."""
    return _json_encoder.encode({"incident_id": incident_id, "at": at.isoformat()})


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def link_incident(complaint: Complaint, incident_id: str, at: datetime) -> bool:
    """The one change of a complaint that joins an incident at ``at``: its incident, the "incident"
    tag, and ``incident_linked`` in its history, after the events before it (a link read from
    beside the complaint may be older than some of them). A link already in the history (same
    incident, same time) changes nothing: a link is merged again on every read; so does one to the
    incident the complaint is in already (linked in the record by an earlier version). Answers
    whether anything changed."""
    history = complaint.history
    last = None
    for event in history:
        if event.action == "incident_linked":
            last = event.detail.get("incident_id")
            if event.at == at and last == incident_id:
                return False
    if complaint.incident_id == incident_id and last == incident_id:  # linked by an earlier version, in the record
        return False
    complaint.incident_id = incident_id
    if "incident" not in complaint.tags:
        complaint.tags.append("incident")
    at = _utc(at)
    place = len(history)
    while place and _utc(history[place - 1].at) > at:
        place -= 1
    history.insert(place, HistoryEvent(at=at, actor="worker", action="incident_linked",
                                       detail={"incident_id": incident_id}))
    if _utc(complaint.updated_at) < at:
        complaint.updated_at = at
    return True


def with_link(complaint: Complaint, links: bytes | None) -> Complaint:
    """``complaint`` with its incident links (the list kept in ``INCIDENT_LINK``, or None) merged
    in, oldest first: the last is its incident."""
    if links is not None:
        decoded = msgspec.json.decode(links)
        for link in [decoded] if isinstance(decoded, dict) else decoded:  # (one link alone: a test build's)
            link_incident(complaint, link["incident_id"], datetime.fromisoformat(link["at"]))
    return complaint


def with_deliveries(complaint: Complaint, deliveries: dict[bytes, bytes]) -> Complaint:
    """``complaint`` with what is kept beside it (``delivery:<cid>``: reply id → state JSON, and
    its incident link) merged in."""
    if deliveries:
        with_link(complaint, deliveries.get(_INCIDENT_LINK))
        for reply in complaint.replies:
            state = deliveries.get(reply.id.encode())
            if state is not None:
                fields = msgspec.json.decode(state)
                reply.delivery = fields.get("delivery", reply.delivery)
                reply.provider_message_id = fields.get("provider_message_id")
                reply.error = fields.get("error")
                at = fields.get("delivered_at")
                reply.delivered_at = datetime.fromisoformat(at) if at else None
    return complaint


__all__ = ["COMPRESSED", "INCIDENT_LINK", "UNDECODABLE", "ZSTD", "decode_complaint", "encode_complaint", "encode_delivery",
           "encode_incident_link", "link_incident", "with_deliveries", "with_link"]
