"""The desk teaches the categoriser (issue 19), against the real Redis: a correction is kept masked
and once -> exported as a labelled record -> a candidate trained with it (a new version, evaluated
against the current one on the same held-out data) -> a dry run shows what would change -> promote
-> a worker's ModelCache (its own models directory: "another machine") loads the new version from
Redis without a restart -> rollback -> the cache goes back. Then the same through HTTP
(gateway/api_model.py in a small app with only its controller) and the CLI.

Small data: 20 messages per category cut from data/corpus (140 messages), trained once a module."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any, AsyncIterator

import msgspec
import pytest
import redis.asyncio as aioredis

from router.understanding import artefacts, corpus
from router.understanding.compact import COMPACT_FILE
from router.understanding.corrections import all_corrections, export_corrections, record_correction
from router.understanding.model_cache import ModelCache
from router.understanding.registry import (
    AlreadyCurrent,
    ModelRegistry,
    NothingToRollBack,
    Recent,
)
from tests.conftest import ALICE, APP, SUPERVISOR, corpus_subset, eventually, make_env

pytestmark = pytest.mark.integration

TAUGHT = "balance_query"
#: What the desk keeps correcting: the small model calls these function_fault / account_security.
STARPASS = [
    "The Starpass stamps on my membership page went missing again, call me on 13812345678",
    "my Starpass stamps are gone from the wallet, card 4111 1111 1111 1111",
    "Starpass 印花又不见了 我的电话 13912345678",
    "where did my Starpass stamps go? they were there yesterday",
    "Starpass stamp count shows zero, I had 40 stamps last week",
    "I want to know how many Starpass stamps I have left",
    "Starpass 印花怎么少了 昨天还有二十个",
    "the Starpass stamps total on the page is wrong",
    "how many Starpass stamps do I have? page is blank",
    "Starpass 印花余额查不到",
    "can you check my Starpass stamps balance please",
    "Starpass stamps disappeared after I paid at the cafe",
    "my Starpass stamp card is empty, where are my stamps",
    "Starpass 印花 数量不对",
]




@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """``(the training file, a models directory holding the trained default, its version)``."""
    root = tmp_path_factory.mktemp("model")
    data = corpus_subset(root / "train_small.jsonl", per_category=20)
    model = artefacts.train(str(data), root / "models")
    return data, root / "models", model.version


def _models(baseline: tuple[Path, Path, str], into: Path) -> Path:
    """A fresh copy of the baseline's models directory: a machine whose default is the baseline."""
    shutil.copytree(baseline[1], into)
    return into


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _teach(redis: Any, prefix: str) -> None:
    for n, text in enumerate(STARPASS):
        _, created = await record_correction(
            redis, prefix, complaint_id=f"cmp{n:03d}", text=text, from_category="function_fault",
            to_category=TAUGHT, reason="Starpass stamps are a balance", by="agent:alice", channel="app",
            language="zh" if "印花" in text else "en", customer_id=f"cust-{n:03d}")
        assert created


async def test_correction_retrain_dry_run_promote_rollback(redis, prefix: str, baseline, tmp_path: Path) -> None:
    data, _, base_version = baseline
    trainer_dir = _models(baseline, tmp_path / "trainer")
    worker_dir = _models(baseline, tmp_path / "worker")
    registry = ModelRegistry(redis, prefix, trainer_dir)
    cache = ModelCache(redis, prefix, worker_dir)
    assert (await cache.get()).version == base_version  # Redis names no version: the default
    assert base_version == artefacts.load(trainer_dir, base_version).version
    before = (await cache.get()).predict(STARPASS[3]).category
    assert before != TAUGHT

    # correction recorded masked, once
    await _teach(redis, prefix)
    again, created = await record_correction(
        redis, prefix, complaint_id="cmp000", text=STARPASS[0], from_category="function_fault", to_category=TAUGHT,
        reason="Starpass stamps are a balance", by="agent:alice", channel="app", language="en", customer_id="cust-000")
    assert not created and again.text.endswith("call me on [phone ···78]")
    stored = await all_corrections(redis, prefix)
    assert len(stored) == len(STARPASS)
    raw = json.dumps([s.text for s in stored], ensure_ascii=False)
    assert "13812345678" not in raw and "4111 1111 1111 1111" not in raw and "13912345678" not in raw
    assert "[card ···1111]" in raw

    # exported as labelled records in the corpus format
    exported = tmp_path / "corrections.jsonl"
    assert await export_corrections(redis, prefix, exported) == len(STARPASS)
    records = corpus.load_records(exported)
    assert {r["category"] for r in records} == {TAUGHT} and all(r["customer"].startswith("desk-") for r in records)
    assert "13812345678" not in exported.read_text(encoding="utf-8")

    # a candidate trained with them: a new version, evaluated against the current one
    info = await registry.train_candidate(data_glob=str(data), by="supervisor:sam")
    version = info["version"]
    assert version != base_version and info["corrections"] == len(STARPASS)
    held = sum(1 for r in records if corpus.is_heldout(r))
    assert info["corrections_heldout"] == held
    evaluation = info["evaluation"]
    assert evaluation["current"]["version"] == base_version and evaluation["heldout_corrections"] == held
    assert evaluation["current"]["measured_as"].startswith("its recipe refitted")
    assert evaluation["heldout_records"] == info["heldout"]["heldout_records"]
    assert 0 < evaluation["candidate"]["macro_f1"] <= 1 and 0 < evaluation["current"]["macro_f1"] <= 1
    assert evaluation["macro_f1_delta"] == round(evaluation["candidate"]["macro_f1"]
                                                 - evaluation["current"]["macro_f1"], 4)
    assert TAUGHT in evaluation["per_category"] and "delta" in evaluation["per_category"][TAUGHT]
    if held:
        assert evaluation["candidate"]["corrections_accuracy"] > evaluation["current"]["corrections_accuracy"]
    listed = {v["version"]: v for v in await registry.versions()}
    assert listed[version]["stored"] and not listed[version]["current"]
    assert (await registry.current_version()) is None  # trained, not promoted

    # dry run over recent complaints
    recent = [Recent(f"r{n}", text, "function_fault", f"C-20260101-{n:06d}") for n, text in enumerate(STARPASS[:6])]
    recent.append(Recent("r-fee", "why was I charged a withdrawal fee of $2?", "fee_dispute"))
    report = await registry.dry_run(version, recent, examples=2)
    assert report["examined"] == 7 and report["would_change"] >= 3
    assert report["would_change"] + report["unchanged"] == 7
    move = next(m for m in report["changes"] if (m["from"], m["to"]) == ("function_fault", TAUGHT))
    assert move["count"] >= 3 and len(move["examples"]) == 2
    assert all("1381234" not in e["text"] and "4111 1111" not in e["text"] for e in move["examples"])

    # promote: the worker's cache follows without a restart, loading the bytes from Redis
    with pytest.raises(ValueError):
        await registry.promote(version, by="supervisor:sam", reason="  ")
    entry = await registry.promote(version, by="supervisor:sam", reason="learned Starpass stamps")
    assert entry["previous"] is None and entry["version"] == version
    with pytest.raises(AlreadyCurrent):
        await registry.promote(version, by="supervisor:sam", reason="again")

    async def follows() -> Any:
        return (await cache.get()).version == version

    await eventually(follows)
    assert (worker_dir / version / artefacts.MODEL_FILE).is_file()
    # the compact form travels with it: the worker loaded arrays, not the pickled pipeline
    assert (worker_dir / version / COMPACT_FILE).is_file() and (await cache.get()).pipeline is None
    assert (await cache.get()).predict(STARPASS[3]).category == TAUGHT

    # rollback: back to the default, and the cache with it
    back = await registry.rollback(by="supervisor:sam", reason="agents prefer the old one")
    assert back["action"] == "rolled_back" and back["version"] is None and back["previous"] == version

    async def went_back() -> Any:
        return (await cache.get()).version == base_version

    await eventually(went_back)
    with pytest.raises(NothingToRollBack):
        await registry.rollback(by="supervisor:sam", reason="again")
    history = await registry.history()
    assert [(h["action"], h["by"], h["reason"]) for h in history] == [
        ("rolled_back", "supervisor:sam", "agents prefer the old one"),
        ("promoted", "supervisor:sam", "learned Starpass stamps")]


async def test_promote_twice_and_roll_back_step_by_step(redis, prefix: str, baseline, tmp_path: Path) -> None:
    """Rollback returns to the version current before the last promotion, one step at a time."""
    data, _, base_version = baseline
    registry = ModelRegistry(redis, prefix, _models(baseline, tmp_path / "trainer"), keep=2)
    first = (await registry.train_candidate(data_glob=str(data), by="supervisor:sam"))["version"]
    assert first == base_version  # nothing new to learn: the same data makes the same version
    await _teach(redis, prefix)
    second = (await registry.train_candidate(data_glob=str(data), by="supervisor:sam"))["version"]
    assert second != first
    await registry.promote(first, by="supervisor:sam", reason="pin the default")
    await registry.promote(second, by="supervisor:sam", reason="learned Starpass")
    assert (await registry.rollback(by="supervisor:sam", reason="step back"))["version"] == first
    assert await registry.current_version() == first
    assert (await registry.rollback(by="supervisor:sam", reason="step back again"))["version"] is None
    assert await registry.current_version() is None


def _app(settings: Any, data_glob: str) -> Any:
    """A Litestar app with only the model controller, wired as gateway/app.py wires the others
    (services dependency, authenticator, problem handlers, a Redis client made in its own loop)."""
    from contextlib import asynccontextmanager

    from litestar import Litestar
    from litestar.di import Provide

    from gateway.api_model import ModelController
    from gateway.auth import Authenticator
    from gateway.problems import exception_handlers
    from router.store import ComplaintStore

    store = ComplaintStore(settings.redis_prefix)
    services = SimpleNamespace(settings=settings, store=store)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(settings.redis_url)
        store.bind(client)
        try:
            yield
        finally:
            await client.aclose()

    app = Litestar(route_handlers=[ModelController], exception_handlers=exception_handlers, lifespan=[lifespan],
                   dependencies={"services": Provide(lambda: services, sync_to_thread=False)}, logging_config=None)
    app.state.authenticator = Authenticator(settings)
    app.state.model_training_glob = data_glob
    return app


async def _cli(*argv: str) -> tuple[int, str, str]:
    """``python -m gateway ...`` in a thread (it runs its own event loop), output captured."""
    from gateway.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return cli_main(list(argv))

    return await asyncio.to_thread(run), out.getvalue(), err.getvalue()


async def test_http_and_cli(client, drain, settings, redis, prefix: str, baseline, redis_url: str,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisors' endpoints in a small app with only the model controller (gateway/app.py
    does not mount it yet), on complaints that came in through the real gateway and worker."""
    from litestar.testing import AsyncTestClient

    data, _, base_version = baseline
    models_dir = _models(baseline, settings.var_dir / "models")
    # this desk's models directory holds the small baseline (the worker keeps the session's shared one)
    settings = msgspec.structs.replace(settings, models_dir=models_dir)
    for name, value in make_env(redis_url, prefix, settings.var_dir, GATEWAY_MODELS_DIR=str(models_dir)).items():
        monkeypatch.setenv(name, value)
    for n, text in enumerate(STARPASS[3:9]):
        r = await client.post("/v1/messages", json={"user_id": f"u{n}", "text": text}, headers=APP)
        assert r.status_code == 202, r.text
    assert await drain() >= 6
    await _teach(redis, prefix)

    async with AsyncTestClient(app=_app(settings, str(data)), raise_server_exceptions=False) as http:
        shown = (await http.get("/v1/model", headers=ALICE)).json()
        assert shown["current"]["version"] == base_version and shown["current"]["promoted"] is False
        assert shown["versions"] == [] and shown["history"] == [] and shown["rollback_to"] is None
        assert (await http.get("/v1/model", headers=APP)).status_code == 403
        assert (await http.post("/v1/model/versions", headers=ALICE)).status_code == 403

        corrections = (await http.get("/v1/model/corrections", params={"limit": 10}, headers=ALICE)).json()
        assert len(corrections["items"]) == 10 and corrections["total"] == len(STARPASS)
        rest = (await http.get("/v1/model/corrections", params={"limit": 10, "next": corrections["next"]},
                               headers=ALICE)).json()
        assert len(rest["items"]) == len(STARPASS) - 10 and rest["next"] is None
        assert "13812345678" not in json.dumps(corrections, ensure_ascii=False) + json.dumps(rest, ensure_ascii=False)

        r = await http.post("/v1/model/versions", headers=SUPERVISOR)
        assert r.status_code == 201, r.text
        trained = r.json()
        version = trained["version"]
        assert trained["trained_by"] == "supervisor:sam" and trained["evaluation"]["current"]["version"] == base_version

        r = await http.post(f"/v1/model/versions/{version}/dry-run", json={"limit": 50}, headers=SUPERVISOR)
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["examined"] == 6 and report["would_change"] >= 1
        assert any(m["to"] == TAUGHT for m in report["changes"])
        assert (await http.post("/v1/model/versions/0123456789abcdef/dry-run", headers=SUPERVISOR)).status_code == 404
        assert (await http.post("/v1/model/versions/..%2Fetc/dry-run", headers=SUPERVISOR)).status_code == 404

        r = await http.post("/v1/model/promote", json={"version": version, "reason": ""}, headers=SUPERVISOR)
        assert r.status_code in (400, 422)
        r = await http.post("/v1/model/promote", json={"version": version, "reason": "learned Starpass"},
                            headers=SUPERVISOR)
        assert r.status_code == 200 and r.json()["by"] == "supervisor:sam"
        r = await http.post("/v1/model/promote", json={"version": version, "reason": "again"}, headers=SUPERVISOR)
        assert r.status_code == 409 and r.json()["code"] == "already_current"
        shown = (await http.get("/v1/model", headers=SUPERVISOR)).json()
        assert shown["current"]["version"] == version and shown["current"]["promoted"] is True
        assert shown["current"]["evaluation"]["measured"] and shown["rollback_to"] == "default"

        # the CLI on the same desk: the corrections, a rollback, a promotion
        code, out, _ = await _cli("model", "corrections", "--limit", "3")
        assert code == 0 and out.count("balance_query") == 3 and "13812345678" not in out
        code, out, _ = await _cli("model", "rollback", "--reason", "back to the default")
        assert code == 0 and "the default" in out
        code, _, err = await _cli("model", "rollback", "--reason", "again")
        assert code == 1 and "nothing_to_roll_back" in err
        code, out, _ = await _cli("model", "promote", version, "--reason", "once more")
        assert code == 0 and version in out

        r = await http.post("/v1/model/rollback", json={"reason": "not yet"}, headers=SUPERVISOR)
        assert r.status_code == 200 and r.json()["version"] is None
        r = await http.post("/v1/model/rollback", json={"reason": "again"}, headers=SUPERVISOR)
        assert r.status_code == 409 and r.json()["code"] == "nothing_to_roll_back"
        history = (await http.get("/v1/model", headers=ALICE)).json()["history"]
        assert [h["action"] for h in history] == ["rolled_back", "promoted", "rolled_back", "promoted"]
        assert history[1]["by"].startswith("cli:") and history[2]["by"].startswith("cli:")
    assert (models_dir / version / artefacts.MODEL_FILE).is_file()
