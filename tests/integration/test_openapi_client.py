"""A client generated from /schema/openapi.json (openapi-python-client, as an integrator would)
drives one complaint from the app's message to its resolution against real `gateway serve` and
`gateway worker` processes: the document's request bodies and typed answers are enough to do the
desk's work, and the answers decode into the generated models."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid

import httpx
import jsonschema_rs
import pytest

from tests.conftest import AGENT_TOKENS, APP_KEY, auth
from tests.desk import desk_processes, wait_until

pytestmark = pytest.mark.integration
PACKAGE = "desk_client"


@pytest.fixture(scope="module")
def generated(redis_url, tmp_path_factory):
    """The served gateway's base URL and the client package generated from its document."""
    tmp = tmp_path_factory.mktemp("client")
    with desk_processes(redis_url, tmp) as (base, _logs):
        document = tmp / "openapi.json"
        document.write_bytes(httpx.get(f"{base}/schema/openapi.json", timeout=10).content)
        done = subprocess.run(
            [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document), "--meta", "none",
             "--output-path", str(tmp / PACKAGE)],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        sys.path.insert(0, str(tmp))
        try:
            yield base, importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(str(tmp))
            for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
                del sys.modules[name]


def test_a_generated_client_takes_a_complaint_from_message_to_resolution(generated):
    base, client = generated
    models = importlib.import_module(f"{PACKAGE}.models")
    submit = importlib.import_module(f"{PACKAGE}.api.app.submit_app_message")
    message_state = importlib.import_module(f"{PACKAGE}.api.app.get_app_message")
    claim = importlib.import_module(f"{PACKAGE}.api.queues.claim_next_for_me")
    reply = importlib.import_module(f"{PACKAGE}.api.complaints.reply_to_complaint")
    resolve = importlib.import_module(f"{PACKAGE}.api.complaints.resolve_complaint")
    show = importlib.import_module(f"{PACKAGE}.api.complaints.get_complaint")
    app = client.AuthenticatedClient(base_url=base, token=APP_KEY, raise_on_unexpected_status=True)
    agent = client.AuthenticatedClient(base_url=base, token=AGENT_TOKENS["alice"], raise_on_unexpected_status=True)

    accepted = submit.sync(client=app, body=models.AppMessageIn(
        user_id=f"u_{uuid.uuid4().hex[:8]}", text="I was charged twice for one order, 128.50 CNY",
        amount="128.50", currency="CNY", client_message_id=f"gen-{uuid.uuid4().hex[:12]}"))
    assert isinstance(accepted, models.MessageAccepted), accepted

    def processed():
        state = message_state.sync(accepted.message_id, client=app)
        return state.complaint_id if isinstance(state, models.MessageState) and isinstance(
            state.complaint_id, str) else None

    complaint_id = wait_until(processed, timeout=30)

    def claimed_one():
        answer = claim.sync_detailed(client=agent)
        return answer if answer.status_code == 200 else None

    claimed = wait_until(claimed_one, timeout=30)
    assert isinstance(claimed.parsed, models.Claimed) and claimed.parsed.complaint.id == complaint_id

    answered = reply.sync(complaint_id, client=agent, body=models.ReplyIn(
        text="We found the duplicate charge and are refunding it."))
    assert isinstance(answered, models.Replied), answered
    assert answered.reply.kind == "agent" and answered.complaint.id == complaint_id

    resolved = resolve.sync(complaint_id, client=agent, body=models.ResolveIn(
        outcome=models.ResolveInOutcome.UPHELD, reason="Charged twice; the second charge is refunded."))
    assert isinstance(resolved, models.ComplaintOut), resolved
    assert resolved.status == models.ComplaintStatus.RESOLVED

    seen_by_app = show.sync(complaint_id, client=app)
    assert isinstance(seen_by_app, models.ComplaintOut), seen_by_app
    assert seen_by_app.status == models.ComplaintStatus.RESOLVED
    assert any(r.kind == "agent" for r in seen_by_app.replies)

    _answers_conform(base, complaint_id, accepted.message_id)

    refused = resolve.sync_detailed(complaint_id, client=client.AuthenticatedClient(
        base_url=base, token="wrong-token"), body=models.ResolveIn())
    assert refused.status_code == 401 and isinstance(refused.parsed, models.Problem)
    assert refused.parsed.code == "credentials_invalid"


def _answers_conform(base: str, complaint_id: str, message_id: str) -> None:
    """The raw answers (the staff's full view with its customer, the masked list item, the app's
    public view, the message's state) are what the document's schemas say, field for field."""
    document = httpx.get(f"{base}/schema/openapi.json", timeout=10).json()
    agent, app = auth(AGENT_TOKENS["alice"]), auth(APP_KEY)
    for path, template, headers in (
        (f"/v1/complaints/{complaint_id}", "/v1/complaints/{complaint_id}", agent),
        (f"/v1/complaints/{complaint_id}", "/v1/complaints/{complaint_id}", app),
        ("/v1/complaints", "/v1/complaints", agent),
        (f"/v1/messages/{message_id}", "/v1/messages/{message_id}", app),
    ):
        answer = httpx.get(base + path, headers=headers, timeout=10)
        assert answer.status_code == 200, (path, answer.text)
        schema = document["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
        problems = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(answer.json())]
        assert not problems, (path, problems[:5])
