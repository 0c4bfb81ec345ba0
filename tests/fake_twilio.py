"""A local fake of Twilio's REST API: records every request, answers like Twilio."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
MP3 = b"ID3\x04\x00" + b"\x00" * 60


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    status: int = 0  # what the fake answered
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    requests: list[Recorded] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before succeeding
    #: While set, every media or recording download answers this status (a media host in trouble).
    media_status: int = 0

    def start(self) -> "FakeTwilio":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _authorised(self) -> bool:
                expected = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                record = getattr(self, "record", None)
                if record is not None:
                    record.status = status
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                self.record = Recorded("POST", self.path, dict(self.headers), form)
                fake.requests.append(self.record)
                if not self._authorised():
                    return self._answer(401, b'{"code": 20003, "message": "Authenticate", "status": 401}')
                if fake.fail_next:
                    status = fake.fail_next.pop(0)
                    return self._answer(status, json.dumps({"code": 20500, "message": "boom", "status": status}).encode())
                if self.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json":
                    sid = "SM" + uuid.uuid4().hex
                    body = {
                        "sid": sid, "account_sid": fake.account_sid, "to": form.get("To", [""])[0],
                        "from": form.get("From", [""])[0], "body": form.get("Body", [""])[0], "status": "queued",
                        "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
                        "date_created": "Mon, 23 Nov 2026 10:00:00 +0000", "uri": f"/Messages/{sid}.json",
                    }
                    return self._answer(201, json.dumps(body).encode())
                return self._answer(404, b'{"code": 20404, "status": 404}')

            def do_GET(self):  # noqa: N802 - http.server API
                self.record = Recorded("GET", self.path, dict(self.headers), {})
                fake.requests.append(self.record)
                if self.path.startswith("/media/"):
                    if not self._authorised():
                        return self._answer(401, b"")
                    if fake.media_status:
                        return self._answer(fake.media_status, b'{"code": 20500, "message": "media unavailable"}')
                    if self.path.endswith(".mp3"):
                        return self._answer(200, MP3, "audio/mpeg")
                    return self._answer(200, PNG, "image/png")
                return self._answer(404, b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()

    def media_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "GET" and r.path.startswith("/media/")]

    def sent_messages(self) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in r.form.items()} for r in self.requests
                if r.method == "POST" and r.path.endswith("/Messages.json")]

    def created_messages(self) -> list[dict[str, str]]:
        """The messages Twilio accepted (201): what reached the customer."""
        return [{k: v[0] for k, v in r.form.items()} for r in self.requests
                if r.method == "POST" and r.path.endswith("/Messages.json") and r.status == 201]
