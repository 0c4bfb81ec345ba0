"""Ids: the table-driven digits against the plain division form, and their order."""

from __future__ import annotations

import random
import re

from normalizer.ids import _id_digits, new_id

_B32 = "0123456789abcdefghijklmnopqrstuv"


def _b32(number: int, width: int) -> str:
    """The plain form: ``number``'s lowest ``width`` * 5 bits, one division a digit."""
    out = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        out.append(_B32[digit])
    return "".join(reversed(out))


def test_id_digits_are_the_plain_forms():
    rng = random.Random(21)
    edges = [0, 1, 31, 32, 1023, 1024, (1 << 45) - 1, 1 << 45, (1 << 50) - 1, 1 << 50, 1 << 60]
    cases = [(ms, r) for ms in edges for r in edges]
    cases += [(rng.getrandbits(rng.choice((41, 45, 46, 64))), rng.getrandbits(50)) for _ in range(20_000)]
    for ms, r in cases:
        assert _id_digits(ms, r) == _b32(ms, 9) + _b32(r, 10), (ms, r)


def test_new_ids_are_shaped_and_time_ordered():
    ids = [new_id("msg") for _ in range(500)]
    assert all(re.fullmatch(r"msg_[0-9a-v]{19}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the timestamp part never goes back
