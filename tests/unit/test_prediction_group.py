"""The predictions asked of a worker's ``ModelCache`` in one turn of the event loop are made
together at its end, each answered to its own caller: its result, or its own error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from router.understanding.artefacts import load_current
from router.understanding.model_cache import ModelCache
from tests.conftest import TEST_MODELS_DIR


class _Recording:
    """A model whose predictions note the task they were made in (None: a loop callback) and the
    texts of each batch asked of it."""

    def __init__(self, real: Any = None) -> None:
        self.real, self.version, self.made_in, self.batches = real, "v-test", [], []

    def predict_many(self, texts: list[str]) -> list[Any]:
        self.batches.append(list(texts))
        return [self.predict(text) for text in texts]

    def predict(self, text: str) -> Any:
        self.made_in.append(asyncio.current_task())
        if text == "boom":
            raise ValueError("cannot read this one")
        return self.real.predict(text) if self.real is not None else f"p:{text}"


def _cache(model: Any) -> ModelCache:
    cache = ModelCache(None, "test:")  # (no Redis: a model in use and fresh is answered as it is)
    cache.model, cache.checked, cache.check_every = model, time.monotonic(), 3600.0
    return cache


async def test_predictions_asked_in_one_turn_are_made_together_and_each_answered() -> None:
    real = load_current(TEST_MODELS_DIR)
    model = _Recording(real)
    cache = _cache(model)
    texts = ["转账成功了对方没收到", "I was charged twice for one order", "余额不对", "app crashes at login"]
    answers = await asyncio.gather(*(cache.predict(t) for t in texts))
    assert answers == [("v-test", real.predict(t)) for t in texts]
    assert model.made_in == [None] * len(texts)  # all four in one callback, none inside its caller's task
    assert model.batches == [texts]  # their arithmetic in one batch
    assert await cache.predict(texts[0]) == ("v-test", real.predict(texts[0]))  # and alone, the next turn


async def test_an_error_reaches_its_own_caller_alone() -> None:
    cache = _cache(_Recording())
    answers = await asyncio.gather(cache.predict("a"), cache.predict("boom"), cache.predict("b"),
                                   return_exceptions=True)
    assert answers[0] == ("v-test", "p:a") and answers[2] == ("v-test", "p:b")
    assert isinstance(answers[1], ValueError)
    assert cache.model.batches == [["a", "boom", "b"]]  # the batch failed: each made again alone


async def test_a_caller_cancelled_while_waiting_is_skipped_and_the_others_answered() -> None:
    model = _Recording()
    cache = _cache(model)
    first = asyncio.ensure_future(cache.predict("first"))
    second = asyncio.ensure_future(cache.predict("second"))
    await asyncio.sleep(0)  # both asked, in one turn; the predictions are made at its end
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == ("v-test", "p:second")
    assert len(model.made_in) in (1, 2)  # (cancelled before its turn came: not made)
