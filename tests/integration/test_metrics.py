"""GET /metrics: Prometheus text whose counters move as messages flow."""

from __future__ import annotations

import re

import pytest

from router.metrics import HISTOGRAMS
from tests.conftest import AGENT_TOKENS, ALICE, APP, APP_KEY, SUPERVISOR_TOKEN

CUSTOMER, PHONE, EMAIL, CARD = "user-m9-4711", "13800138000", "li.lei@example.com", "6222021234567890123"

pytestmark = pytest.mark.integration


def value(text: str, metric: str, **labels: str) -> float:
    """The sample of ``metric`` with exactly these labels (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(client) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_counters_move_as_messages_flow(client, drain):
    before = await scrape(client)
    assert "# TYPE gateway_messages_in_total counter" in before and "# TYPE gateway_intake_seconds histogram" in before
    for n in range(3):
        await client.post("/v1/messages", json={"user_id": f"m{n}", "text": "charged twice, refund",
                                                "client_message_id": f"c{n}"}, headers=APP)
    await client.post("/v1/messages", json={"user_id": "m0", "text": "charged twice, refund", "client_message_id": "c0"},
                      headers=APP)  # a retry
    await client.post("/v1/messages", json={"user_id": "m0", "text": "Charged twice! Refund."},
                      headers=APP)  # a repeat report, a moment after the first
    mid = (await client.post("/v1/messages", json={
        "user_id": CUSTOMER, "text": f"app crashes, call me on {PHONE} or write to {EMAIL}, card {CARD}"},
        headers=APP)).json()
    await drain()
    after = await scrape(client)
    assert value(after, "gateway_messages_in_total", channel="app", outcome="accepted") - \
        value(before, "gateway_messages_in_total", channel="app", outcome="accepted") == 5
    assert value(after, "gateway_messages_in_total", channel="app", outcome="duplicate") == 1
    assert value(after, "gateway_repeat_merges_total", reason="similar_text") == 1
    assert value(after, "gateway_worker_jobs_total", job="process_message", result="ok") >= 5
    assert value(after, "gateway_worker_job_seconds_count", job="process_message") >= 5
    assert value(after, "gateway_intake_seconds_count", channel="app") >= 5  # the retry never reached intake
    # worker job durations: buckets are cumulative and the +Inf bucket is the count
    # (Redis keeps the one bucket each value fell in; the scrape adds them up)
    counts = [float(line.rsplit(" ", 1)[1]) for line in after.splitlines()
              if line.startswith("gateway_worker_job_seconds_bucket{") and 'job="process_message"' in line]
    assert len(counts) == len(HISTOGRAMS["gateway_worker_job_seconds"][2]) + 1
    assert counts == sorted(counts) and counts[-1] == value(after, "gateway_worker_job_seconds_count",
                                                            job="process_message")
    assert value(after, "gateway_queue_depth", skill="payments") == 3
    assert value(after, "gateway_queue_depth", skill="tech") == 1
    assert value(after, "gateway_queue_oldest_age_seconds", skill="payments") > 0
    # a first response is timed per channel
    state = (await client.get(f"/v1/messages/{mid['message_id']}", headers=APP)).json()
    await client.post(f"/v1/complaints/{state['complaint_id']}/replies", json={"text": "on it"}, headers=ALICE)
    text = await scrape(client)
    assert value(text, "gateway_first_response_seconds_count", channel="app") == 1
    assert value(text, "gateway_queue_depth", skill="tech") == 0
    # no personal data (the customer above wrote all of it) and no credentials
    for secret in (PHONE, EMAIL, CARD, CUSTOMER, APP_KEY, SUPERVISOR_TOKEN, *AGENT_TOKENS.values()):
        assert secret not in text and secret not in after, secret
