"""Which category a new message gets, and how sure of it we are (issue 19).

In this order:

1. a valid ``category_hint`` the channel passed on (the customer chose it);
2. a ``classify`` plugin's verdict in a known category (an override);
3. the learned categoriser (``router.understanding``): the category, its confidence, the
   runner-up and its confidence, the formal flag from the model's formal rules, the version;
4. the keyword rules (``router.categorise``) only when ``GATEWAY_CATEGORISER=keywords`` or the
   model cannot be loaded (logged).

Only the model's guess carries a confidence: the routing rules' triage section looks at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from normalizer.categories import CATEGORIES
from normalizer.schema import InboundMessage
from plugins.manager import GatewayPlugins
from router.categorise import categorise

if TYPE_CHECKING:
    from router.understanding.model_cache import ModelCache

log = logging.getLogger("gateway.worker")


@dataclass(frozen=True)
class Categorised:
    category: str
    formal: bool
    #: ``hint``, ``plugin:<name>``, ``model:<version>``, ``keywords`` or ``default``.
    by: str
    confidence: float | None = None
    runner_up: str | None = None
    runner_up_confidence: float | None = None

    def detail(self) -> dict[str, str]:
        """What the ``categorised`` history event records."""
        detail = {"category": self.category, "formal": str(self.formal).lower(), "by": self.by}
        if self.confidence is not None:
            detail["confidence"] = f"{self.confidence:.4f}"
        if self.runner_up is not None:
            detail["runner_up"] = self.runner_up
        if self.runner_up_confidence is not None:
            detail["runner_up_confidence"] = f"{self.runner_up_confidence:.4f}"
        return detail


async def categorise_message(plugins: GatewayPlugins, message: InboundMessage,
                             model: "ModelCache | None" = None) -> Categorised:
    """The message's category and how it was decided (see the module's docstring). The keyword
    rules run only where their answer is used (the model decides most messages)."""
    hint = message.category_hint
    if hint is not None and hint in CATEGORIES:
        return Categorised(hint, await _formal(model, message.text), "hint")
    verdict = await plugins.classify(message)
    if verdict is not None:
        plugin_name, classification = verdict
        if classification.category in CATEGORIES:
            formal = classification.formal_complaint or await _formal(model, message.text)
            return Categorised(classification.category, formal, f"plugin:{plugin_name}")
        plugins.errors[plugin_name] += 1
        log.error("plugin %s classified into unknown category %r; ignored", plugin_name, classification.category)
    predicted = await _predict(model, message.text)
    if predicted is not None:
        version, p = predicted
        category = p.category if p.category in CATEGORIES else "other"
        return Categorised(category, p.formal_complaint, f"model:{version}", p.confidence, p.runner_up,
                           p.runner_up_confidence)
    keyword = categorise(message.text)
    return Categorised(keyword.category, keyword.formal_complaint, keyword.source)


async def _predict(model: "ModelCache | None", text: str) -> tuple[str, Any] | None:
    """``(version, Prediction)``, or ``None`` (keywords configured, or no model loads: logged)."""
    if model is None:
        return None
    try:
        current = await model.get()
    except Exception as exc:  # noqa: BLE001 - any failure to load means "use the keyword rules"
        log.warning("categoriser unavailable (%s); the keyword rules decide", type(exc).__name__)
        return None
    return await model.predict(text, current)  # (with the predictions asked for in the same turn)


async def _formal(model: "ModelCache | None", text: str) -> bool:
    """The formal flag when the category came from elsewhere: the model's formal rules when the
    model is in use, else the keyword list's."""
    if model is None:
        return categorise(text).formal_complaint
    from router.understanding.formal import formal_verdict

    return formal_verdict(text).formal_complaint


__all__ = ["Categorised", "categorise_message"]
