"""The OpenAPI document a client generator reads (/schema/openapi.json): every /v1 write
operation that takes a body describes it (schema and an example the schema accepts), every
operation describes what it answers on success (typed), problems are problem details, and no
handler reads a body the document does not describe."""

from __future__ import annotations

import inspect
import re
from typing import Any

import jsonschema_rs
import pytest

from gateway.api_doc import OPT_KEY

WRITES = ("post", "put", "patch", "delete")
#: /v1 writes that take no body: the path (and the caller's credentials) say everything.
BODILESS = {"claimNext", "claimNextForMe", "retryQuarantined", "discardQuarantined", "closeIncident",
            "unlinkContact", "trainModelVersion", "consoleExtendLease"}


@pytest.fixture
async def document(client: Any) -> dict[str, Any]:
    answer = await client.get("/schema/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()
            if method in ("get", *WRITES)]


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})


async def test_every_v1_write_describes_its_body_with_an_example_it_accepts(document):
    described, bodiless = 0, set()
    for path, method, op in _operations(document):
        if not path.startswith("/v1") or method not in WRITES:
            continue
        body = op.get("requestBody")
        if body is None:
            bodiless.add(op["operationId"])
            continue
        for media in body["content"].values():
            assert "$ref" in media["schema"], (path, method)
            problems = [e.message for e in _validator(document, media["schema"]).iter_errors(media["example"])]
            assert not problems, (path, method, problems)
        described += 1
    assert bodiless == BODILESS
    assert described >= 25


async def test_every_operation_answers_a_typed_success_and_problem_details(document):
    for path, method, op in _operations(document):
        successes = {status: r for status, r in op["responses"].items() if status.startswith("2")}
        assert successes, (path, method)
        for status, response in successes.items():
            if status == "204":
                assert "content" not in response, (path, method)
                continue
            assert response.get("content"), (path, method, status)
            for media_type, media in response["content"].items():
                schema = media["schema"]
                if "json" in media_type:
                    assert "$ref" in schema or schema.get("properties"), (path, method, status, schema)
                    if "example" in media:
                        assert not list(_validator(document, schema).iter_errors(media["example"])), (path, method)
                else:
                    assert schema.get("type") == "string", (path, method, status, schema)
        if path.startswith("/v1"):
            for status in ("401", "403"):
                problem = op["responses"][status]["content"]["application/problem+json"]
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, method)
                assert not list(_validator(document, problem["schema"]).iter_errors(problem["example"]))


async def test_a_refused_field_is_documented_as_named(document):
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    assert "field" in problem["properties"]
    record = document["paths"]["/v1/complaints"]["post"]
    assert {"400", "413", "415", "422"} <= set(record["responses"])
    body = document["components"]["schemas"]["ComplaintIn"]
    assert body["additionalProperties"] is False  # forbid_unknown_fields, as the handler decodes


async def test_webhooks_document_the_body_they_read_as_bytes(document):
    sms = document["paths"]["/webhooks/twilio/sms"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in sms
    assert "text/xml" in document["paths"]["/webhooks/twilio/sms"]["post"]["responses"]["200"]["content"]
    assert "$ref" in document["paths"]["/webhooks/meta"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _source(fn: Any) -> str:
    """A handler's code, with the code of the controller's methods it calls (``self._let_go``)."""
    source = inspect.getsource(fn)
    owner = inspect.getmodule(fn)
    for called in re.findall(r"self\.(_?\w+)\(", source):
        for cls in vars(owner).values():
            if inspect.isclass(cls) and cls.__module__ == owner.__name__ and callable(vars(cls).get(called)):
                source += inspect.getsource(vars(cls)[called])
    return source


async def test_no_handler_reads_a_body_it_does_not_document(client):
    """A handler whose code reads the body says what the body is, and decodes the struct it
    documents: the document cannot drift from what is refused."""
    from litestar.routes import HTTPRoute

    from gateway.api_doc_channels import CHANNEL_DOCS

    checked = 0
    for route in client.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            source = _source(handler.fn)
            doc = handler.opt.get(OPT_KEY) or CHANNEL_DOCS.get(handler.operation_id)
            if "read_body(" in source or "bounded_body(" in source or "verified_form(" in source:
                assert doc is not None and doc.body is not None, (route.path, handler.operation_id)
            if "decode_json(" in source:
                assert f", {doc.body.__name__})" in source, (route.path, handler.operation_id, doc.body)
                checked += 1
    assert checked >= 25


async def test_a_channel_plugin_documents_its_webhook_through_opt(settings):
    """A plugin outside the repository says what its raw-bytes webhook takes in its handler's
    ``opt``, importing nothing of the gateway for it."""
    import msgspec
    from litestar import Request, post
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app
    from plugins.kit import RouteMount, hookimpl
    from tests.conftest import app_plugins

    class LineEvents(msgspec.Struct):
        destination: str
        events: list[dict[str, Any]] = []

    class LineLike:
        @hookimpl
        def gateway_routes(self, services: Any) -> RouteMount:
            @post("/in", operation_id="lineLikeIn", status_code=200,
                  opt={"request_body": LineEvents, "request_example": {"destination": "U1", "events": []}})
            async def receive(request: Request[Any, Any, Any]) -> None:
                await request.body()

            return RouteMount(handlers=[receive])

    async with AsyncTestClient(app=create_app(settings, plugins=app_plugins(LineLike()))) as client:
        document = (await client.get("/schema/openapi.json")).json()
    body = document["paths"]["/webhooks/extra0/in"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/LineEvents"}
    assert body["example"] == {"destination": "U1", "events": []}
    assert document["components"]["schemas"]["LineEvents"]["required"] == ["destination"]
