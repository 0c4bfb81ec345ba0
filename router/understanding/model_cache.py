"""The current categoriser for a worker process, following promotions and rollbacks without a
restart (like the routing rules' ``EngineCache``)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from router.understanding import artefacts
from router.understanding.registry import CHECK_EVERY_S, RETRY_FAILED_S, ModelRegistry, RegistryError

if TYPE_CHECKING:
    from router.store.keys import Keys
    from router.understanding.model import CategoryModel, Prediction

log = logging.getLogger("router.understanding.registry")

#: The default models already loaded in this process, by (models directory, version): a process
#: that starts several workers (tests, a benchmark) loads each once. A model is read-only.
_LOADED: dict[tuple[str, str], "CategoryModel"] = {}


def load_current_shared(models_dir: Path) -> "CategoryModel":
    """``artefacts.load_current``, once per process for the same directory and version."""
    version = artefacts.current_version(models_dir)
    key = (str(models_dir.resolve()), version or "")
    model = _LOADED.get(key) if version is not None else None
    if model is None:
        model = artefacts.load_current(models_dir)
        _LOADED[(str(models_dir.resolve()), model.version)] = model
    return model


class ModelCache:
    """The current model for a worker: ``await cache.get()``. Redis's current version is re-checked
    at most every ``CHECK_EVERY_S`` and a new one loaded (from the disk cache, else from Redis) when
    it changed; each call answers one model, whole. While Redis names none: ``load_current()`` (the
    default). A version that does not load here (another scikit-learn, bytes gone) is logged and
    tried again after ``RETRY_FAILED_S``; meanwhile the model in use stays. A Redis error while a
    model is loaded keeps that model (the next call asks again)."""

    def __init__(self, redis: Any, prefix: "Keys | str", models_dir: Path | None = None, *,
                 check_every: float = CHECK_EVERY_S) -> None:
        self.registry = ModelRegistry(redis, prefix, models_dir)
        self.check_every = check_every
        self.model: CategoryModel | None = None
        self.named: str | None = None
        self.checked = 0.0
        self._failed: tuple[str | None, float] | None = None
        self._lock = asyncio.Lock()
        #: the predictions asked for in this turn of the loop, made at its end (``predict``)
        self._asked: list[tuple[CategoryModel, str, asyncio.Future[Any]]] = []
        self._asked_loop: asyncio.AbstractEventLoop | None = None

    @property
    def version(self) -> str | None:
        return self.model.version if self.model is not None else None

    async def get(self) -> CategoryModel:
        if self.model is not None and time.monotonic() - self.checked <= self.check_every:
            return self.model
        async with self._lock:
            if self.model is not None and time.monotonic() - self.checked <= self.check_every:
                return self.model
            try:
                named = await self.registry.current_version()
            except (RedisError, OSError):
                if self.model is None:
                    raise
                return self.model
            if self.model is None or named != self.named:
                await self._switch(named)
            self.checked = time.monotonic()
            assert self.model is not None
            return self.model

    async def predict(self, text: str, model: "CategoryModel | None" = None) -> tuple[str, "Prediction"]:
        """``(version, prediction)`` of ``text`` by ``model`` (the one ``get`` just answered), else by
        the current model. The predictions asked for in
        one turn of the event loop (the jobs a grouped prepare answered at once) are made
        together at the end of that turn, their arithmetic in one batch (``predict_many``):
        the code and the model's arrays stay in the CPU's caches instead of being touched
        again after the rest of each job's work (bench/RESULTS.md, eleventh and twelfth
        passes)."""
        if model is None:
            model = await self.get()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[str, Prediction]] = loop.create_future()
        if not self._asked or self._asked_loop is not loop:
            self._asked, self._asked_loop = [], loop
            loop.call_soon(self._predict_asked, self._asked)
        self._asked.append((model, text, waiter))
        return await waiter

    def _predict_asked(self, asked: list[tuple["CategoryModel", str, "asyncio.Future[Any]"]]) -> None:
        if self._asked is asked:
            self._asked = []
        by_model: dict[int, list[tuple[CategoryModel, str, asyncio.Future[Any]]]] = {}
        for item in asked:
            if not item[2].done():  # (its job was cancelled)
                by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            model = items[0][0]
            try:
                predictions = model.predict_many([text for _, text, _ in items])
            except Exception:  # noqa: BLE001 - each text again on its own: an error goes to its own caller
                predictions = None
            for n, (_, text, waiter) in enumerate(items):
                if waiter.done():
                    continue
                try:
                    waiter.set_result((model.version, predictions[n] if predictions is not None else model.predict(text)))
                except Exception as exc:  # noqa: BLE001 - the caller's, as predict() would have raised it
                    waiter.set_exception(exc)

    async def _switch(self, named: str | None) -> None:
        if self._failed and self._failed[0] == named and time.monotonic() < self._failed[1] and self.model is not None:
            return
        if named is not None:
            try:
                self.model = await self.registry.load(named)
                self.named, self._failed = named, None
                log.info("categoriser: version %s in use", named)
                return
            except (RegistryError, artefacts.ModelError, RedisError, OSError) as exc:
                self._failed = (named, time.monotonic() + RETRY_FAILED_S)
                log.warning("categoriser: version %s does not load here (%s); keeping %s", named,
                            type(exc).__name__, self.version or "the default")
                if self.model is not None:
                    return
        self.model = await asyncio.to_thread(load_current_shared, self.registry.models_dir)
        self.named = None if named is None or self._failed else named
        if named is None:
            self._failed = None
            log.info("categoriser: no version promoted; the default %s in use", self.model.version)


__all__ = ["ModelCache", "load_current_shared"]
