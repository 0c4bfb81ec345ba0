"""Understanding what customers write: a learned categoriser with a confidence and a runner-up,
and the formal-complaint flag (issue 19).

- :mod:`router.understanding.textprep` - folding text for the model and the rules
- :mod:`router.understanding.formal` - the formal-complaint flag (rules of shared/corpus/README.md)
- :mod:`router.understanding.model` - the categoriser and its :class:`Prediction`
- :mod:`router.understanding.artefacts` - versioned training, ``load_current`` / ``train_default``
- :mod:`router.understanding.evaluate` - scores on a labelled file
- :mod:`router.understanding.corpus` - the labelled corpus and its fixed held-out split
- :mod:`router.understanding.corrections` - the desk's category corrections, kept masked as labelled examples
- :mod:`router.understanding.registry` - versions in Redis: candidate, dry run, promote, rollback,
  and the workers' ``ModelCache``

Importing this package imports neither scikit-learn nor numpy; the names below load on first use.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Prediction": "router.understanding.model",
    "CategoryModel": "router.understanding.model",
    "load_current": "router.understanding.artefacts",
    "train_default": "router.understanding.artefacts",
    "train": "router.understanding.artefacts",
    "ModelError": "router.understanding.artefacts",
    "formal_verdict": "router.understanding.formal",
    "is_formal_complaint": "router.understanding.formal",
    "record_correction": "router.understanding.corrections",
    "record_complaint_correction": "router.understanding.corrections",
    "ModelRegistry": "router.understanding.registry",
    "ModelCache": "router.understanding.model_cache",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'router.understanding' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
