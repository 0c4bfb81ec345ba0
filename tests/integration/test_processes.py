"""The real processes: `python -m gateway serve` and `python -m gateway worker` on real sockets,
driving one message from POST /v1/messages to a claimed, answered, resolved complaint."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ALICE, APP, SUPERVISOR
from tests.desk import desk_processes, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_processes(redis_url, tmp_path):
    with desk_processes(redis_url, tmp_path) as started:
        yield started


def test_message_to_resolved_complaint_through_real_processes(gateway_processes):
    base, logs = gateway_processes
    with httpx.Client(base_url=base, timeout=5) as http:
        r = http.post("/v1/messages", headers=APP, json={
            "user_id": "u-42", "text": "Refund not received for order no. 88812345678, card 6222021234567890123, call me on 13800138000",
            "client_message_id": "e2e-1", "amount": "35.99", "currency": "USD"})
        assert r.status_code == 202, r.text
        mid = r.json()["message_id"]

        state = wait_until(lambda: (s := http.get(f"/v1/messages/{mid}", headers=APP).json())["status"] == "processed" and s)
        cid = state["complaint_id"]

        claimed = http.post("/v1/queues/payments/claim", headers=ALICE)
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["complaint"]["id"] == cid

        reply = http.post(f"/v1/complaints/{cid}/replies", headers=ALICE, json={"text": "Your refund was sent today."})
        assert reply.status_code == 201

        def delivered():
            c = http.get(f"/v1/complaints/{cid}", headers=APP).json()
            return all(x["delivery"] == "delivered" for x in c["replies"]) and len(c["replies"]) == 2 and c

        app_view = wait_until(delivered)
        assert app_view["replies"][1]["text"] == "Your refund was sent today."

        resolved = http.post(f"/v1/complaints/{cid}/resolve", headers=ALICE, json={"outcome": "upheld"})
        assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
        queues = http.get("/v1/queues", headers=SUPERVISOR).json()["items"]
        assert all(q["depth"] == 0 for q in queues)

    # personal data never reaches the logs
    time.sleep(0.3)
    text = (logs / "serve.log").read_text(errors="replace") + (logs / "worker.log").read_text(errors="replace")
    for secret in ("6222021234567890123", "13800138000"):
        assert secret not in text
