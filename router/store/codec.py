"""How a complaint is stored: JSON without its empty fields, zlib-compressed; and its replies'
delivery states, kept beside it (``delivery:<cid>``), merged back in when it is read."""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import msgspec

from normalizer.schema import Complaint

COMPRESSED = b"z"

_json_encoder = msgspec.json.Encoder()
_complaint_decoder = msgspec.json.Decoder(Complaint)


def _strip(value: dict[str, Any]) -> dict[str, Any]:
    """Drop None, empty lists and empty dicts (every such field has that default, so decoding
    restores them): stored complaints carry only what they say. Only containers are walked into
    (a complaint is mostly strings)."""
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        kind = type(v)
        if kind is dict:
            if v:
                out[k] = _strip(v)
        elif kind is list:
            if v:
                out[k] = _strip_list(v)
        else:
            out[k] = v
    return out


def _strip_list(values: list[Any]) -> list[Any]:
    return [_strip(v) if type(v) is dict else _strip_list(v) if type(v) is list else v for v in values]


def encode_complaint(complaint: Complaint, replace: dict[str, str] | None = None) -> bytes:
    """A complaint as stored: JSON without empty fields, zlib-compressed (about a third of the
    plain JSON; Redis memory per open complaint is a design goal). ``replace`` substitutes text
    (the case number for its placeholder) before compression."""
    data = _json_encoder.encode(_strip(msgspec.to_builtins(complaint)))
    for old, new in (replace or {}).items():
        data = data.replace(old.encode(), new.encode())
    return COMPRESSED + zlib.compress(data, 1)


def decode_complaint(data: bytes) -> Complaint:
    if data[:1] == COMPRESSED:
        data = zlib.decompress(data[1:])
    return _complaint_decoder.decode(data)


def encode_delivery(state: dict[str, Any]) -> bytes:
    """A reply's delivery state as kept in ``delivery:<cid>`` (fields that are None left out)."""
    return _json_encoder.encode({k: v for k, v in state.items() if v is not None})


def with_deliveries(complaint: Complaint, deliveries: dict[bytes, bytes]) -> Complaint:
    """``complaint`` with its replies' delivery states (reply id → state JSON) merged in."""
    if deliveries:
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


__all__ = ["COMPRESSED", "decode_complaint", "encode_complaint", "encode_delivery", "with_deliveries"]
