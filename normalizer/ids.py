"""Ids and clocks every layer shares: time-ordered ids, and milliseconds since the epoch."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


_B32 = "0123456789abcdefghijklmnopqrstuv"  # base32hex: sorts like the numbers it encodes


def _b32(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        out.append(_B32[digit])
    return "".join(reversed(out))


def new_id(kind: str) -> str:
    """Time-ordered ids: 9 base32 characters of ms timestamp + 10 of randomness (50 bits), so
    ids sort by creation and stay short (ids appear in many index entries: memory)."""
    return f"{kind}_{_b32(now_ms(), 9)}{_b32(int.from_bytes(os.urandom(7), 'big') >> 6, 10)}"
