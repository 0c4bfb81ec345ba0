"""The fake provider API lives in the integrators' test kit; tests import it from here too."""

from __future__ import annotations

import re
from typing import Any

from gateway.testkit import Call, FakeApi


def note_answers(fake: FakeApi) -> list[tuple[Call, int]]:
    """Every answer the fake's route handlers give from now on (not the faults queued in
    ``fail_next``), with its status, in order: what the provider actually did."""
    answered: list[tuple[Call, int]] = []

    def noting(handler: Any) -> Any:
        def answer(call: Call, match: "re.Match[str]") -> Any:
            result = handler(call, match)
            answered.append((call, result[0]))
            return result
        return answer

    fake.routes = [(method, pattern, noting(handler)) for method, pattern, handler in fake.routes]
    return answered


class Outage:
    """Switches the fake's routes whose path pattern contains ``part`` to answer an error (a
    provider's host in trouble) while ``on``, or to the next ``times`` calls; the other routes
    answer as before. Counts the calls those routes get (``calls``), failing or not."""

    def __init__(self, fake: FakeApi, part: str, status: int = 500, body: Any = None,
                 content_type: str = "application/json", *, times: int = 0) -> None:
        self.on = False
        self.times = times
        self.calls: list[Call] = []
        self.answer = (status, body if body is not None else {"error": "unavailable"}, content_type)

        def guarded(handler: Any) -> Any:
            def answer(call: Call, match: "re.Match[str]") -> Any:
                self.calls.append(call)
                if self.times > 0:
                    self.times -= 1
                    return self.answer
                return self.answer if self.on else handler(call, match)
            return answer

        fake.routes = [(method, rx, guarded(handler) if part in rx.pattern else handler)
                       for method, rx, handler in fake.routes]


__all__ = ["Call", "FakeApi", "Outage", "note_answers"]
