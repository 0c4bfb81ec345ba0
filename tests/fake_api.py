"""A local fake of a provider's REST API (Graph, Telegram Bot API, WeChat): a real HTTP server on
loopback that records every request and answers from handlers the test gives it."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


#: A handler answers (status, body, content type); a dict or list body is sent as JSON.
Answer = tuple[int, Any, str]
Handler = Callable[[Call, re.Match[str]], Answer]


@dataclass
class FakeApi:
    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    #: (status, body) answers given before any handler runs, one per request (faults).
    fail_next: list[tuple[int, Any]] = field(default_factory=list)

    def route(self, method: str, pattern: str, handler: Handler) -> "FakeApi":
        self.routes.append((method, re.compile(pattern + "$"), handler))
        return self

    def start(self) -> "FakeApi":
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                call = Call(method, split.path, {k: v[0] for k, v in parse_qs(split.query).items()},
                            dict(self.headers), body)
                fake.calls.append(call)
                if fake.fail_next:
                    status, answer = fake.fail_next.pop(0)
                    return self._send(status, answer, "application/json")
                for route_method, pattern, handler in fake.routes:
                    match = pattern.match(split.path)
                    if route_method == method and match:
                        return self._send(*handler(call, match))
                self._send(404, {"error": "no such route"}, "application/json")

            def _send(self, status: int, body: Any, content_type: str) -> None:
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts_to(self, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and re.search(pattern, c.path)]
