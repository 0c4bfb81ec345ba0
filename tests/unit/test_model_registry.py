"""The desk's corrections and the categoriser's versions in Redis (the real one, a prefix per
test): corrections kept masked and once, exported as corpus records (latest label per complaint,
customers hashed); keys under the desk's prefix; version names that are never paths; artefacts
pruned to the newest N but never the current one or the rollback target; a worker's cache that
keeps working when Redis names a version it cannot load; one training at a time."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import redis.asyncio as aioredis

from normalizer.schema import Complaint, ComplaintStatus, Contact, MessageEntry
from router.redis_pool import hash_tag
from router.understanding import corpus
from router.understanding.corrections import (
    CorrectionError,
    ModelKeys,
    all_corrections,
    complaint_text,
    export_corrections,
    labelled_records,
    list_corrections,
    record_complaint_correction,
    record_correction,
)
from router.understanding.model_cache import ModelCache
from router.understanding.registry import (
    ArtefactGone,
    ModelRegistry,
    NothingToRollBack,
    TrainingBusy,
    UnknownVersion,
    check_version_name,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _complaint(text: str, *, edited: str | None = None) -> Complaint:
    messages = [MessageEntry(message_id="m1", channel="sms", text=text, received_at=T0, language="en")]
    if edited is not None:
        messages.append(MessageEntry(message_id="m2", channel="sms", text=edited, received_at=T0, language="en",
                                     edit_of="m1"))
    messages.append(MessageEntry(message_id="m3", channel="sms", text="any update??", received_at=T0, language="en"))
    return Complaint(id="cmpA", case_number="C-20260301-000001", status=ComplaintStatus.accepted,
                     category="function_fault", formal_complaint=False, channel="sms", customer_id="cus_42",
                     contact=Contact(kind="phone", value="+8613812345678"), language="en", created_at=T0,
                     updated_at=T0, messages=messages)


async def test_a_correction_is_kept_masked_and_once(redis, prefix: str) -> None:
    text = "card 4111 1111 1111 1111 was charged twice, call 13812345678 or mail li.wei@example.com"
    reason = "customer asked us to call 13912345678: it is a duplicate payment"
    first, created = await record_correction(
        redis, prefix, complaint_id="cmp1", text=text, from_category="function_fault", to_category="payment_amount",
        reason=reason, by="agent:alice", channel="sms", language="en", customer_id="cus_1", at=T0)
    assert created
    assert first.text == "card [card ···1111] was charged twice, call [phone ···78] or mail [email]"
    assert "13912345678" not in first.reason and "[phone ···78]" in first.reason
    raw = json.dumps({k.decode(): v.decode() for k, v in (await redis.hgetall(ModelKeys(prefix).corrections)).items()},
                     ensure_ascii=False)
    assert "4111" not in raw.replace("···1111", "") and "13812345678" not in raw and "example.com" not in raw
    assert "cus_1" not in raw  # the customer as a one-way key

    # the same request again: nothing new, the first one answered
    again, created = await record_correction(
        redis, prefix, complaint_id="cmp1", text=text, from_category="function_fault", to_category="payment_amount",
        reason=reason, by="agent:alice", channel="sms", language="en", customer_id="cus_1", at=T0 + timedelta(minutes=5))
    assert not created and again == first
    # a later correction of the same complaint is another one; the export keeps the latest label
    await record_correction(
        redis, prefix, complaint_id="cmp1", text=text, from_category="payment_amount", to_category="transaction",
        reason="it was a refund after all", by="agent:bob", channel="sms", language="en", customer_id="cus_1",
        at=T0 + timedelta(hours=1))
    items, total = await list_corrections(redis, prefix)
    assert total == 2 and [c.to_category for c in items] == ["transaction", "payment_amount"]  # newest first
    (record,) = labelled_records(await all_corrections(redis, prefix))
    assert record["category"] == "transaction" and record["corrected_from"] == "payment_amount"
    assert record["text"] == first.text and record["customer"].startswith("desk-") and record["source"] == "desk_correction"


async def test_what_a_correction_needs(redis, prefix: str) -> None:
    common: dict[str, Any] = dict(complaint_id="c", text="x", by="agent:alice", channel="app", language="en")
    with pytest.raises(CorrectionError, match="not a category"):
        await record_correction(redis, prefix, from_category="other", to_category="fees", reason="r", **common)
    with pytest.raises(CorrectionError, match="already"):
        await record_correction(redis, prefix, from_category="other", to_category="other", reason="r", **common)
    with pytest.raises(CorrectionError, match="reason"):
        await record_correction(redis, prefix, from_category="other", to_category="transaction", reason="  ", **common)
    assert (await list_corrections(redis, prefix))[1] == 0


async def test_a_complaint_is_corrected_with_the_text_the_worker_categorised(redis, prefix: str, tmp_path: Path) -> None:
    """The first message as the customer last edited it (not the follow-ups, not the replaced text)."""
    complaint = _complaint("app crashed, my number 13812345678", edited="I was charged twice, my number 13812345678")
    assert complaint_text(complaint) == "I was charged twice, my number 13812345678"
    assert complaint_text(_complaint("just this")) == "just this"
    stored, _ = await record_complaint_correction(redis, prefix, complaint, to_category="payment_amount",
                                                  reason="double charge", by="agent:alice", key="ev1")
    assert stored.id == "cmpA:ev1" and stored.case_number == "C-20260301-000001"
    assert stored.from_category == "function_fault" and stored.text == "I was charged twice, my number [phone ···78]"

    path = tmp_path / "fixes.jsonl"
    assert await export_corrections(redis, prefix, path) == 1
    (record,) = corpus.load_records(path)
    assert record["category"] == "payment_amount" and record["channel"] == "sms" and record["lang"] == "en"
    before = path.read_bytes()
    assert await export_corrections(redis, prefix, path) == 1 and path.read_bytes() == before  # same bytes


def test_every_key_is_under_the_desks_prefix() -> None:
    for prefix in ("cg:", "{desk7}:"):
        keys = ModelKeys(prefix)
        names = [v for k, v in vars(keys).items() if not k.startswith("_")] + [keys.artefact("0123456789abcdef")]
        assert len(names) == 9 and all(name.startswith(prefix) for name in names)
        assert {hash_tag(name) for name in names} == {hash_tag(prefix)}


def test_a_version_name_is_never_a_path() -> None:
    assert check_version_name("0123456789abcdef") == "0123456789abcdef"
    for bad in ("../../etc/passwd", "0123456789ABCDEF", "0123456789abcde", "", "0123456789abcdef/..", None):
        with pytest.raises(UnknownVersion):
            check_version_name(bad)  # type: ignore[arg-type]


async def _fake_version(redis: Any, prefix: str, version: str, at_ms: int) -> None:
    keys = ModelKeys(prefix)
    await redis.hset(keys.artefact(version), mapping={"model": b"not a model", "manifest": b"{}", "sha256": "0" * 64})
    await redis.hset(keys.versions, version, json.dumps({"version": version, "trained_at": str(at_ms)}))
    await redis.zadd(keys.artefacts, {version: at_ms})


async def test_old_artefacts_are_pruned_but_never_the_current_one_or_the_rollback_target(redis, prefix: str,
                                                                                       tmp_path: Path) -> None:
    keys = ModelKeys(prefix)
    versions = [f"{n:016x}" for n in range(1, 6)]  # oldest first
    for n, version in enumerate(versions):
        await _fake_version(redis, prefix, version, 1000 + n)
    await redis.set(keys.current, versions[0])
    await redis.rpush(keys.previous, "", versions[1])
    registry = ModelRegistry(redis, prefix, tmp_path / "models", keep=3)
    assert await registry.prune() == [versions[2], versions[3]]
    assert [m.decode() for m in await redis.zrange(keys.artefacts, 0, -1)] == [versions[0], versions[1], versions[4]]
    assert not await redis.exists(keys.artefact(versions[2]))
    rows = {v["version"]: v for v in await registry.versions()}
    assert set(rows) == set(versions)  # the figures stay
    assert not rows[versions[2]]["stored"] and rows[versions[0]]["stored"] and rows[versions[0]]["current"]
    assert await registry.prune() == []

    with pytest.raises(ArtefactGone):
        await registry.promote(versions[2], by="supervisor:sam", reason="the old one")
    with pytest.raises(UnknownVersion):
        await registry.promote("00000000000000ff", by="supervisor:sam", reason="never trained")
    with pytest.raises(ArtefactGone, match="SHA-256"):  # bytes that are not what was stored are never loaded
        await registry.promote(versions[4], by="supervisor:sam", reason="corrupt")
    assert not (tmp_path / "models" / versions[4]).exists()
    with pytest.raises(UnknownVersion):
        await registry.dry_run("../escape00000000", [])
    assert await registry.current_version() == versions[0] and await registry.history() == []


async def test_nothing_to_roll_back_and_a_reason_is_required(redis, prefix: str, tmp_path: Path) -> None:
    registry = ModelRegistry(redis, prefix, tmp_path / "models")
    with pytest.raises(ValueError):
        await registry.rollback(by="supervisor:sam", reason="")
    with pytest.raises(NothingToRollBack):
        await registry.rollback(by="supervisor:sam", reason="why not")


async def test_one_training_at_a_time(redis, prefix: str, tmp_path: Path) -> None:
    keys = ModelKeys(prefix)
    await redis.set(keys.training, "someone-else", ex=60)
    with pytest.raises(TrainingBusy):
        await ModelRegistry(redis, prefix, tmp_path / "models").train_candidate(data_glob=str(tmp_path / "none*.jsonl"))
    assert await redis.get(keys.training) == b"someone-else"  # not released by the refused call
    assert await redis.hlen(keys.versions) == 0


async def test_the_cache_keeps_a_working_model_when_redis_names_one_it_cannot_load(
        redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from router.understanding import artefacts

    lines = []
    taken: dict[str, int] = {}
    for record in corpus.load_records(corpus.data_files()):
        if taken.get(record["category"], 0) < 4:
            taken[record["category"]] = taken.get(record["category"], 0) + 1
            lines.append(json.dumps(record, ensure_ascii=False))
    data = tmp_path / "train_tiny.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    default = artefacts.train(str(data), tmp_path / "models")

    keys = ModelKeys(prefix)
    await _fake_version(redis, prefix, "00000000000000aa", 1)  # its bytes fail their SHA-256
    await redis.set(keys.current, "00000000000000aa")
    cache = ModelCache(redis, prefix, tmp_path / "models")
    with caplog.at_level(logging.WARNING, logger="router.understanding.registry"):
        model = await cache.get()
    assert model.version == default.version  # the default, not a failure in every job
    assert any("00000000000000aa" in r.getMessage() and "does not load" in r.getMessage() for r in caplog.records)
    cache.checked = 0.0  # as if the quarter second had passed: asks Redis again, keeps the working model
    assert (await cache.get()).version == default.version
