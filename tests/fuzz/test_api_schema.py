"""The whole API against its own OpenAPI document (schemathesis, real `gateway serve` and
`gateway worker` processes): no 5xx anywhere for generated requests, and every /v1 operation
refuses missing and wrong credentials."""

from __future__ import annotations

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hsettings
from schemathesis.core import NOT_SET

from tests.conftest import SUPERVISOR
from tests.desk import desk_processes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    with desk_processes(redis_url, tmp, GATEWAY_CONTACT_RATE_PER_MINUTE="0", GATEWAY_LOG_LEVEL="WARNING") as served:
        yield served


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served[0]}/schema/openapi.json")


def _success_validators(document):
    """(METHOD, path, status) -> a validator of the JSON answer the document promises."""
    validators = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation.get("responses", {}).items():
                media = (response.get("content") or {}).get("application/json")
                if status.startswith("2") and media:
                    validators[(method.upper(), path, int(status))] = jsonschema_rs.Draft202012Validator(
                        {**media["schema"], "components": document["components"]})
    return validators


def test_no_server_errors_for_generated_requests(api_schema, served):
    """Every operation in /schema, requests generated from its parameters and bodies (valid and
    not), sent with a supervisor's (or for /v1/messages the app's) credentials: nothing answers
    a 5xx other than 503 + Retry-After, and every successful JSON answer is what the document
    says it is."""
    from hypothesis import given

    from tests.conftest import APP

    failures: list[str] = []
    operations = 0
    calls = [0]
    conforming = [0]  # successful JSON answers checked against their schema
    #: operations whose document describes a body, and those that were sent one
    with_body: set[str] = set()
    sent_body: set[str] = set()
    promised = _success_validators(httpx.get(f"{served[0]}/schema/openapi.json").json())
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if operation.body:
            with_body.add(operation.label)
        headers = APP if operation.path == "/v1/messages" else SUPERVISOR if operation.path.startswith("/v1") else None

        # training a candidate model costs seconds of CPU per call, whatever the body: a few suffice
        examples = 3 if (operation.method.upper(), operation.path) == ("POST", "/v1/model/versions") else 12

        @given(case=operation.as_strategy())
        @hsettings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            # schemathesis gives up after 10 s: training a candidate model on a loaded 2-core machine
            # can take longer, and a slow answer is not what this test looks for (a 5xx is)
            response = case.call(headers=headers, timeout=120)
            calls[0] += 1
            if case.body is not NOT_SET:
                sent_body.add(operation.label)
            validator = promised.get((case.method.upper(), operation.path, response.status_code))
            if validator is not None and "json" in str(response.headers.get("content-type")):
                wrong = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(response.json())]
                conforming[0] += not wrong
                if wrong:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} is not "
                                    f"what the document says: {wrong[:3]}")
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:200]}")

        run()
    assert operations >= 40 and calls[0] >= operations * 3, (operations, calls[0])
    assert conforming[0] >= 150, conforming[0]
    assert len(with_body) >= 35 and sent_body == with_body, sorted(with_body - sent_body)
    assert not failures, "\n".join(failures[:10]) + "\n" + (served[1] / "serve.log").read_text(errors="replace")[-2000:]


def test_every_v1_operation_refuses_missing_and_wrong_credentials(served):
    base = served[0]
    document = httpx.get(f"{base}/schema/openapi.json").json()
    checked = 0
    for path, operations in document["paths"].items():
        if not path.startswith("/v1"):
            continue
        url = base + path.replace("{version}", "1")
        for part in ("complaint_id", "customer_id", "incident_id", "item_id", "skill", "agent_id", "message_id",
                     "evidence_id", "contact"):
            url = url.replace("{" + part + "}", "x")
        for method in operations:
            if method not in ("get", "post", "put", "delete"):
                continue
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic eDp5"}):
                r = httpx.request(method.upper(), url, headers=headers, json={} if method in ("post", "put") else None)
                assert r.status_code == 401, (method, path, headers, r.status_code)
            checked += 1
    assert checked >= 30
