"""What the OpenAPI document says of each operation's bodies, from typed msgspec structs.

Handlers read their JSON bodies themselves (``plugins.requests``: the size bound and 413, 415 for
a body that is not JSON, 422 naming the field at fault, unknown fields refused), so Litestar cannot
see the type they decode into. ``documented`` records it on the route handler (its ``opt``), with
the success schema, an example and the problems it may answer; ``complete_openapi`` writes them
into the document Litestar generated, the schemas made by msgspec from the very structs the
handlers decode with (``forbid_unknown_fields`` appears as ``additionalProperties: false``).

A channel plugin may document a raw-bytes webhook the same way without importing this module:
``opt={"request_body": SomeStruct, "request_media_type": "application/x-www-form-urlencoded"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import msgspec

from gateway.api_types import Problem

H = TypeVar("H")

#: The ``opt`` key the documentation rides on.
OPT_KEY = "openapi_doc"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
#: Each problem status: its title (as plugins/problems.py words it), what it means here, and the
#: ``code`` (and ``field``) of its example.
PROBLEMS: dict[int, tuple[str, str, str, str | None]] = {
    400: ("Bad request", "Malformed JSON, an empty body, or a bad query parameter", "invalid_json", None),
    401: ("Unauthorized", "Missing or wrong credentials", "credentials_invalid", None),
    403: ("Forbidden", "The credentials' role may not do this", "forbidden", None),
    404: ("Not found", "No such resource", "not_found", None),
    409: ("Conflict", "Conflicts with the resource's state", "conflict", None),
    412: ("Precondition failed", "If-Match names a version that is no longer active", "version_mismatch", None),
    413: ("Payload too large", "The body is over this operation's size limit", "payload_too_large", None),
    415: ("Unsupported media type", "The body is not JSON", "unsupported_media_type", None),
    422: ("Unprocessable content", "A field's value is refused; `field` names it", "invalid_field", "text"),
    428: ("Error", "If-Match is required", "if_match_required", None),
    429: ("Too many requests", "Too many messages from this sender; Retry-After says when to try again",
          "rate_limited", None),
    503: ("Service unavailable", "Storage unreachable or changing hands, or the desk is behind: nothing was "
          "accepted; retry after Retry-After", "storage_unavailable", None),
}


@dataclass(frozen=True)
class Doc:
    """One operation's bodies: ``body`` (a struct; ``None``: no body), ``ok`` (the success
    struct; ``None``: no content), more success answers in ``also`` (status: (struct or None,
    description)), and the problem statuses beyond those every operation has."""

    body: type | None = None
    ok: type | None = None
    example: Any = None
    body_required: bool = True
    media_type: str = JSON
    ok_description: str = "Success"
    #: For an ``ok`` of ``str`` or ``bytes``: the answer's media type (TwiML: text/xml).
    ok_media_type: str | None = None
    ok_example: Any = None
    also: dict[int, tuple[type | None, str]] = field(default_factory=dict)
    problems: tuple[int, ...] = ()


def describe(body: type | None = None, ok: type | None = None, *, example: Any = None, **more: Any) -> Doc:
    """An operation's documentation. ``example`` must decode into ``body``: an example that rots
    fails at import, not in a client."""
    if body is not None and example is None:
        raise ValueError(f"{body.__name__}: a documented request body needs an example")
    if body is not None:
        msgspec.convert(example, body)
    if more.get("ok_example") is not None:
        msgspec.convert(more["ok_example"], ok)  # type: ignore[arg-type]
    return Doc(body=body, ok=ok, example=example, **more)


def documented(body: type | None = None, ok: type | None = None, *, example: Any = None, **more: Any
               ) -> Callable[[H], H]:
    """Decorate a route handler (above ``@post`` & co.) with ``describe``'s documentation."""
    doc = describe(body, ok, example=example, **more)

    def attach(handler: H) -> H:
        handler.opt[OPT_KEY] = doc  # type: ignore[attr-defined]
        return handler

    return attach


def _doc_of(handler: Any, by_operation: dict[str, Doc]) -> Doc | None:
    opt = handler.opt or {}
    if OPT_KEY in opt:
        return opt[OPT_KEY]
    if "request_body" in opt:  # a plugin's own declaration (see the module's docstring)
        return Doc(body=opt["request_body"], ok=opt.get("response_body"),
                   example=opt.get("request_example"), media_type=opt.get("request_media_type", JSON))
    return by_operation.get(handler.operation_id) if isinstance(handler.operation_id, str) else None


def _problems(doc: Doc, path: str, guarded: bool) -> list[int]:
    statuses = set(doc.problems)
    if guarded:
        statuses |= {401, 403, 503}
    if "{" in path:
        statuses.add(404)
    if doc.body is not None:
        statuses.add(413)
        if doc.media_type == JSON and guarded:  # webhooks quarantine what they cannot parse
            statuses |= {400, 415, 422}
    return sorted(statuses)


def _problem_response(status: int, problem_ref: dict[str, Any]) -> dict[str, Any]:
    title, meaning, code, at = PROBLEMS.get(status, ("Error", "A problem", "error", None))
    example: dict[str, Any] = {"type": f"https://complaint-gateway.dev/problems/{code.replace('_', '-')}",
                               "title": title, "status": status, "detail": "What went wrong, in words.",
                               "code": code, **({"field": at} if at else {})}
    return {"description": meaning, "content": {PROBLEM_JSON: {"schema": problem_ref, "example": example}}}


#: Answers that are not JSON: a file as stored, or text (Prometheus', TwiML).
RAW = {bytes: ("application/octet-stream", {"type": "string", "format": "binary"}),
       str: ("text/plain", {"type": "string"})}


def _success(struct: type | None, description: str, refs: dict[type, dict[str, Any]],
             media_type: str | None = None) -> dict[str, Any]:
    if struct is None:
        return {"description": description}
    if struct in RAW:
        default_type, schema = RAW[struct]
        media_type = media_type or default_type
        return {"description": description, "content": {media_type: {"schema": schema}}}
    return {"description": description, "content": {JSON: {"schema": refs[struct]}}}


def render_plugins(by_operation: dict[str, Doc] | None = None) -> list[Any]:
    """Litestar's JSON, YAML and documentation pages, each completing the document (once, in
    place: Litestar builds it once per app and hands every page the same dict) before rendering.
    ``by_operation``: documentation for handlers that carry none (by operation id)."""
    from litestar.openapi.plugins import (JsonRenderPlugin, RapidocRenderPlugin, RedocRenderPlugin,
                                          StoplightRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin)

    class Completing:
        def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
            state = request.app.state
            if not state.get("openapi_completed"):
                complete_openapi(openapi_schema, _handlers(request.app), by_operation or {})
                state["openapi_completed"] = True
            return super().render(request, openapi_schema)  # type: ignore[misc]

    def completing(cls: type, **kwargs: Any) -> Any:
        return type(cls.__name__, (Completing, cls), {})(**kwargs)

    return [completing(RedocRenderPlugin), completing(JsonRenderPlugin),
            completing(YamlRenderPlugin, path=["/openapi.yaml", "/openapi.yml"]), completing(SwaggerRenderPlugin),
            completing(RapidocRenderPlugin), completing(StoplightRenderPlugin)]


def _handlers(app: Any) -> list[tuple[str, str, Any]]:
    from litestar.routes import HTTPRoute

    return [(route.path_format or "/", method.lower(), handler)
            for route in app.routes if isinstance(route, HTTPRoute)
            for handler in route.route_handlers if handler.resolve_include_in_schema()
            for method in handler.http_methods if method != "HEAD"]


def complete_openapi(document: dict[str, Any], handlers: list[tuple[str, str, Any]],
                     by_operation: dict[str, Doc] | None = None) -> dict[str, Any]:
    """Write each documented handler's bodies into ``document`` (Litestar's, as a dict) in place.
    ``handlers``: (path as in the document, lower-case method, route handler)."""
    docs = [(path, method, handler, doc) for path, method, handler in handlers
            if (doc := _doc_of(handler, by_operation or {})) is not None]
    structs: list[type] = [Problem]
    for *_, doc in docs:
        for struct in (doc.body, doc.ok, *(s for s, _ in doc.also.values())):
            if struct is not None and struct not in RAW and struct not in structs:
                structs.append(struct)
    refs, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    by_struct = dict(zip(structs, refs))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in components.items():
        if name in schemas and schemas[name] != schema and _stripped(schemas[name]) != _stripped(schema):
            raise ValueError(f"two different schemas are named {name}: rename one of the structs")
        schemas[name] = schema
    for path, method, handler, doc in docs:
        operation = document["paths"][path][method]
        if doc.body is not None:
            media = {"schema": RAW[doc.body][1] if doc.body in RAW else by_struct[doc.body]}
            if doc.example is not None:
                media["example"] = doc.example
            operation["requestBody"] = {"required": doc.body_required, "content": {doc.media_type: media}}
        responses = {k: v for k, v in operation.get("responses", {}).items() if not k.startswith(("2", "4"))}
        status = str(handler.status_code)
        responses[status] = _success(doc.ok, doc.ok_description, by_struct, doc.ok_media_type)
        if doc.ok_example is not None:
            responses[status]["content"][JSON]["example"] = doc.ok_example
        for extra_status, (struct, description) in doc.also.items():
            responses[str(extra_status)] = _success(struct, description, by_struct)
        guarded = bool(handler.opt.get("roles"))
        for problem in _problems(doc, path, guarded):
            if problem in doc.also:
                continue
            responses[str(problem)] = _problem_response(problem, by_struct[Problem])
        operation["responses"] = dict(sorted(responses.items()))
    return document


def _stripped(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema without what Litestar and msgspec word differently (titles, descriptions, order)."""
    return {"properties": sorted(schema.get("properties", {})), "required": sorted(schema.get("required", []))}


__all__ = ["Doc", "OPT_KEY", "complete_openapi", "describe", "documented", "render_plugins"]
