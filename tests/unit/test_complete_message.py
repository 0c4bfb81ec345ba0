"""``build_message(derive=False)`` + ``complete_message`` (the worker's side) make the same
message as ``build_message`` at intake: the same amount, transaction id and language from the
text, on every corpus text and on the table below."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from normalizer.inbound import DERIVE_LATER, build_message, complete_message
from normalizer.schema import Amount, Contact

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

CASES = [
    ({"text": "我被重复扣款了 ¥128.50，交易号 T2026112212345678，请尽快退款"}),
    ({"text": "I was charged twice for my coffee, $4.50, please refund"}),
    ({"text": "提现手续费太高了，要求减免"}),
    ({"text": "charged 68 yuan", "amount": Amount(value="12.00", currency="USD")}),
    ({"text": "order 4455667788 failed", "transaction": "TX-1", "language": "en"}),
    ({"text": "扣了六十八块八", "language": "zh", "metadata": {"tier": "vip"}}),
    ({"text": ""}),
]


def both(**given):
    common = dict(message_id="msg_1", channel="app", sender=Contact(kind="app_user", value="u1"), received_at=AT)
    return build_message(**common, **given), build_message(**common, **given, derive=False)


@pytest.mark.parametrize("given", CASES)
def test_completed_later_is_what_intake_would_have_made(given):
    now, later = both(**given)
    assert DERIVE_LATER in later.metadata
    assert complete_message(later) == now
    assert complete_message(complete_message(later)) == now
    assert complete_message(now) is now  # a message taken in whole is left as it is


def test_every_corpus_text():
    texts = [json.loads(line)["text"] for path in sorted((ROOT / "data" / "corpus").glob("train_*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(texts) > 1000
    for text in texts:
        now, later = both(text=text)
        assert complete_message(later) == now, text
