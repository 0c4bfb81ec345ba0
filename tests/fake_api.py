"""The fake provider API lives in the integrators' test kit; tests import it from here too."""

from __future__ import annotations

import re
from typing import Any

from plugins.testkit import Call, FakeApi


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


__all__ = ["Call", "FakeApi", "note_answers"]
