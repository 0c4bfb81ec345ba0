"""The learned categoriser at the desk (issue 19), through real HTTP and the real worker:
confidence and runner-up on every model-categorised complaint; the triage queue (a threshold a
supervisor sets in the routing rules); an agent's correction re-routes the case and is kept as a
masked labelled example; the model lifecycle through the mounted API (train with the corrections
-> dry run -> promote -> the next complaint names the promoted version -> rollback); a plugin
classifier and GATEWAY_CATEGORISER=keywords; a possible repeat linked, then merged with one call.

Every worker loads the session's shared default model (tests/conftest.py); only the lifecycle test
trains, on a 140-message cut of the corpus in a models directory of its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.settings import load_settings
from normalizer.schema import Classification
from plugins.hookspecs import hookimpl
from router.understanding import artefacts
from router.understanding.model_cache import load_current_shared
from tests.conftest import ALICE, APP, BOB, SUPERVISOR, TEST_MODELS_DIR, app_plugins, corpus_subset, make_env

pytestmark = pytest.mark.integration

UNSURE = "I was charged twice for my coffee, call me on 13812345678"
SURE = "my app crashes every time I open it, the screen goes white"
THRESHOLD = 0.8


def _model() -> Any:
    return load_current_shared(TEST_MODELS_DIR)


async def _send(client: Any, user: str, text: str, **extra: Any) -> str:
    r = await client.post("/v1/messages", json={"user_id": user, "text": text, **extra}, headers=APP)
    assert r.status_code == 202, r.text
    return r.json()["message_id"]


async def _complaint_of(client: Any, message_id: str) -> dict[str, Any]:
    state = (await client.get(f"/v1/messages/{message_id}", headers=APP)).json()
    assert state.get("complaint_id"), state
    r = await client.get(f"/v1/complaints/{state['complaint_id']}", headers=SUPERVISOR)
    assert r.status_code == 200, r.text
    return r.json()


def _event(complaint: dict[str, Any], action: str) -> dict[str, Any]:
    found = [h for h in complaint["history"] if h["action"] == action]
    assert found, (action, [h["action"] for h in complaint["history"]])
    return found[-1]["detail"]


async def _depths(client: Any) -> dict[str, int]:
    items = (await client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]
    return {q["skill"]: q["depth"] for q in items}


async def _set_triage(client: Any, below: float = THRESHOLD) -> None:
    shown = await client.get("/v1/routing/rules", headers=SUPERVISOR)
    rules = shown.json()["rules"]
    rules["queues"] = [*rules["queues"], "triage"]
    rules["triage"] = {"below": below, "queue": "triage"}
    r = await client.put("/v1/routing/rules", json={"rules": rules, "reason": "unsure guesses to triage"},
                         headers={**SUPERVISOR, "If-Match": shown.headers["etag"]})
    assert r.status_code == 200, r.text


async def test_model_categorises_with_confidence_and_the_triage_queue(client, drain) -> None:
    model = _model()
    unsure, sure = model.predict(UNSURE), model.predict(SURE)
    assert unsure.confidence < THRESHOLD <= sure.confidence  # the premise, on the model the worker loads

    # a triage section naming a queue the rules do not have is refused, with the field named
    shown = (await client.get("/v1/routing/rules", headers=SUPERVISOR)).json()
    bad = {**shown["rules"], "triage": {"below": 0.5, "queue": "nowhere"}}
    r = await client.put("/v1/routing/rules", json={"rules": bad, "reason": "x"}, headers={**SUPERVISOR, "If-Match": '"0"'})
    assert r.status_code == 422 and any(p["field"] == "triage.queue" for p in r.json()["problems"])
    await _set_triage(client)

    unsure_id, sure_id = await _send(client, "u-unsure", UNSURE), await _send(client, "u-sure", SURE)
    await drain()
    triaged, routed = await _complaint_of(client, unsure_id), await _complaint_of(client, sure_id)

    assert triaged["skill"] == "triage" and "triage" in triaged["tags"]
    assert triaged["category"] == unsure.category and triaged["category_confidence"] == unsure.confidence
    assert triaged["category_runner_up"] == unsure.runner_up
    assert triaged["category_runner_up_confidence"] == unsure.runner_up_confidence
    shown_both = _event(triaged, "triaged")
    assert shown_both["category"] == unsure.category and shown_both["runner_up"] == unsure.runner_up
    assert float(shown_both["confidence"]) == unsure.confidence
    assert float(shown_both["runner_up_confidence"]) == unsure.runner_up_confidence
    categorised = _event(triaged, "categorised")
    assert categorised["by"] == f"model:{model.version}" and categorised["runner_up"] == unsure.runner_up

    assert routed["skill"] == "tech" and routed["category"] == "function_fault" and "triage" not in routed["tags"]
    assert routed["category_confidence"] == sure.confidence
    depths = await _depths(client)
    assert depths["triage"] == 1 and depths["tech"] == 1

    # a hint is not triaged (the customer chose the category)
    hinted = await _send(client, "u-hint", UNSURE, category_hint="fee_dispute")
    await drain()
    hinted_case = await _complaint_of(client, hinted)
    assert hinted_case["skill"] == "fees" and hinted_case["category_confidence"] is None
    assert _event(hinted_case, "categorised")["by"] == "hint"

    # an agent who works triage claims it and corrects the category: out of triage, into fees
    r = await client.put("/v1/agents/alice/skills", json={"skills": ["triage"]}, headers=SUPERVISOR)
    assert r.status_code == 200
    r = await client.post("/v1/queues/triage/claim", headers=ALICE)
    assert r.status_code == 200 and r.json()["complaint"]["id"] == triaged["id"]
    cid = triaged["id"]
    for body, field in (({"category": "nonsense", "reason": "x"}, "category"),
                        ({"category": "fee_dispute", "reason": "   "}, "reason"),
                        ({"category": unsure.category, "reason": "same"}, "category")):
        r = await client.patch(f"/v1/complaints/{cid}", json=body, headers=ALICE)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert (await client.patch("/v1/complaints/cmp_nosuch", json={"category": "fee_dispute", "reason": "x"},
                               headers=ALICE)).status_code == 404
    assert (await client.patch(f"/v1/complaints/{cid}", json={"category": "fee_dispute", "reason": "x"},
                               headers=APP)).status_code == 403
    fix = {"category": "fee_dispute", "reason": "the coffee shop's fee, card 4111 1111 1111 1111"}
    r = await client.patch(f"/v1/complaints/{cid}", json=fix, headers=ALICE)
    assert r.status_code == 200, r.text
    corrected = r.json()
    assert corrected["category"] == "fee_dispute" and corrected["category_confidence"] == 1.0
    assert corrected["skill"] == "fees" and corrected["status"] == "accepted" and corrected["assignee"] is None
    change = _event(corrected, "category_corrected")
    assert (change["from"], change["to"], change["by"]) == (unsure.category, "fee_dispute", "agent:alice")
    assert _event(corrected, "rerouted")["skill"] == "fees"
    depths = await _depths(client)
    assert depths["triage"] == 0 and depths["fees"] == 2

    # a retried request changes nothing more
    again = await client.patch(f"/v1/complaints/{cid}", json=fix, headers=ALICE)
    assert again.status_code == 200
    assert [h["action"] for h in again.json()["history"]].count("category_corrected") == 1
    assert (await _depths(client))["fees"] == 2

    # the correction is kept as a labelled example, personal data masked
    kept = (await client.get("/v1/model/corrections", headers=BOB)).json()
    assert kept["total"] == 1
    item = kept["items"][0]
    assert (item["complaint_id"], item["from_category"], item["to_category"]) == (cid, unsure.category, "fee_dispute")
    raw = json.dumps(kept, ensure_ascii=False)
    assert "13812345678" not in raw and "4111 1111 1111 1111" not in raw and "[phone ···78]" in item["text"]

    # the claimable case is in fees now: bob (no skills set) takes it there
    r = await client.post("/v1/queues/fees/claim", headers=BOB)
    assert r.status_code == 200 and r.json()["complaint"]["id"] in (cid, hinted_case["id"])


class Classifier:
    @hookimpl
    def classify_message(self, message: Any) -> Classification:
        return Classification(category="balance_query", source="test")


async def test_a_plugin_classifier_overrides_the_model_and_keywords_can_be_chosen(client, settings, redis_url,
                                                                                   prefix, tmp_path) -> None:
    from router.worker import create_worker

    async def drain_with(chosen: Any, plugins: Any = None) -> None:
        worker = create_worker(chosen, burst=True, handle_signals=False, plugins=plugins)
        try:
            await worker.main()
        finally:
            await worker.close()

    mid = await _send(client, "u-plugin", SURE)
    await drain_with(settings, app_plugins(Classifier()))
    case = await _complaint_of(client, mid)
    assert case["category"] == "balance_query" and case["category_confidence"] is None
    assert _event(case, "categorised")["by"] == "plugin:extra0"

    keywords = load_settings(make_env(redis_url, prefix, tmp_path / "kw", GATEWAY_CATEGORISER="keywords"))
    mid = await _send(client, "u-keywords", "the app crashed and my password reset fails")
    await drain_with(keywords)
    case = await _complaint_of(client, mid)
    assert _event(case, "categorised")["by"] == "keywords" and case["category_confidence"] is None
    assert case["category"] == "account_security"  # the keyword rules' answer (security outweighs the crash)


async def test_a_possible_repeat_is_linked_then_merged_with_one_call(client, drain) -> None:
    first = await _send(client, "u-rep", "我的余额为什么跟我算的不一样 我每笔都记账的 就是对不上")
    await drain()
    case = await _complaint_of(client, first)
    second = await _send(client, "u-rep", "上次问的事 有结果了吗")
    await drain()
    linked = await _complaint_of(client, second)
    assert linked["id"] != case["id"] and linked["possible_repeat_of"] == case["id"]
    assert "possible_repeat" in linked["tags"]
    assert _event(linked, "possible_repeat")["of"] == case["id"]

    r = await client.post(f"/v1/complaints/{linked['id']}/merge", json={"into": linked["id"], "reason": "x"},
                          headers=ALICE)
    assert r.status_code == 422 and r.json()["code"] == "merge_into_itself"
    other = await _send(client, "u-other", "my app crashes every time I open it")
    await drain()
    other_case = await _complaint_of(client, other)
    r = await client.post(f"/v1/complaints/{linked['id']}/merge", json={"into": other_case["id"], "reason": "x"},
                          headers=ALICE)
    assert r.status_code == 422 and r.json()["code"] == "other_customer"
    depth_before = sum((await _depths(client)).values())

    r = await client.post(f"/v1/complaints/{linked['id']}/merge",
                          json={"into": case["case_number"], "reason": "the same balance question"}, headers=ALICE)
    assert r.status_code == 200, r.text
    merged, target = r.json()["complaint"], r.json()["into"]
    assert merged["status"] == "closed" and merged["outcome"] == "merged"
    assert _event(merged, "merged_into")["into"] == case["id"]
    assert all(d["state"] != "running" for d in merged["deadlines"])
    assert target["repeat_count"] == 1 and second in [m["message_id"] for m in target["messages"]]
    assert _event(target, "merged")["from_complaint"] == linked["id"]
    assert any(r["id"].startswith("rep_") or r["kind"] == "ack" for r in target["replies"])
    assert sum((await _depths(client)).values()) == depth_before - 1  # the merged case left its queue
    r = await client.post(f"/v1/complaints/{linked['id']}/merge", json={"into": other_case["id"], "reason": "x"},
                          headers=ALICE)
    assert r.status_code in (409, 422)


# -- the lifecycle through the mounted API -------------------------------------------------------




STARPASS = [
    "The Starpass stamps on my membership page went missing again, call me on 13812345678",
    "my Starpass stamps are gone from the wallet",
    "Starpass 印花又不见了 我的电话 13912345678",
    "where did my Starpass stamps go? they were there yesterday",
    "Starpass stamp count shows zero, I had 40 stamps last week",
    "I want to know how many Starpass stamps I have left",
    "Starpass 印花怎么少了 昨天还有二十个",
    "the Starpass stamps total on the page is wrong",
]


async def test_correct_retrain_dry_run_promote_rollback_through_the_app(redis_url, prefix, tmp_path) -> None:
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from router.worker import create_worker

    data = corpus_subset(tmp_path / "train_small.jsonl", per_category=20)
    models = tmp_path / "models"
    base = artefacts.train(str(data), models)  # this desk's default: a small model
    settings = load_settings(make_env(redis_url, prefix, tmp_path / "var", GATEWAY_MODELS_DIR=str(models)))

    async def drain() -> None:
        worker = create_worker(settings, burst=True, handle_signals=False)
        try:
            await worker.main()
        finally:
            await worker.close()

    app = create_app(settings)
    app.state.model_training_glob = str(data)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        ids = [await _send(client, f"u{n}", text) for n, text in enumerate(STARPASS)]
        await drain()
        for mid in ids:  # the desk corrects what the model got wrong
            case = await _complaint_of(client, mid)
            assert _event(case, "categorised")["by"] == f"model:{base.version}"
            if case["category"] != "balance_query":
                r = await client.patch(f"/v1/complaints/{case['id']}",
                                       json={"category": "balance_query", "reason": "Starpass stamps are a balance"},
                                       headers=ALICE)
                assert r.status_code == 200, r.text
        taught = (await client.get("/v1/model/corrections", headers=ALICE)).json()["total"]
        assert taught >= 4

        r = await client.post("/v1/model/versions", headers=SUPERVISOR)
        assert r.status_code == 201, r.text
        version = r.json()["version"]
        assert version != base.version and r.json()["corrections"] == taught
        assert r.json()["evaluation"]["current"]["version"] == base.version
        r = await client.post(f"/v1/model/versions/{version}/dry-run", json={"limit": 50}, headers=SUPERVISOR)
        assert r.status_code == 200 and r.json()["examined"] == len(STARPASS), r.text
        r = await client.post("/v1/model/promote", json={"version": version, "reason": "learned Starpass"},
                              headers=SUPERVISOR)
        assert r.status_code == 200, r.text

        mid = await _send(client, "u-after", "my Starpass stamps vanished from the page")
        await drain()
        assert _event(await _complaint_of(client, mid), "categorised")["by"] == f"model:{version}"

        r = await client.post("/v1/model/rollback", json={"reason": "agents prefer the old one"}, headers=SUPERVISOR)
        assert r.status_code == 200 and r.json()["version"] is None
        mid = await _send(client, "u-back", "where are my Starpass stamps")
        await drain()
        assert _event(await _complaint_of(client, mid), "categorised")["by"] == f"model:{base.version}"
