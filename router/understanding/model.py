"""The learned categoriser: character and word n-grams into a linear SVM with calibrated
probabilities, plus the rule-based formal-complaint flag.

Why this shape (figures from grouped 5-fold cross-validation on our corpus' training part, see
bench/understanding.py): character 1-3-grams read Chinese without a segmenter and catch English
word pieces, word 1-2-grams add English phrases; a linear SVM scored as well as logistic
regression (macro-F1 0.88-0.90 either way) and trains in a second instead of ~17 s on 2 cores;
sigmoid calibration over 5 folds gives probabilities an agent can read as a confidence. The keyword
list of router/categorise.py as extra features made it worse (0.865 against 0.886).

Prediction does not go through scikit-learn's per-call validation: the fitted vectorisers turn the
text into a sparse row, and the calibrated linear models are applied with numpy (the same numbers
``predict_proba`` gives; a test checks it), which keeps one prediction well under a millisecond.
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import msgspec
import numpy as np
from scipy.sparse import csr_array

try:  # the kernel csr_array's product with a dense matrix runs, called without building a csr_array
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a scipy that moved it: csr_array, as before
    _csr_matvecs = None

from router.understanding import compact
from router.understanding.formal import formal_verdict
from router.understanding.textprep import prepare

CATEGORIES = ("account_security", "transaction", "payment_amount", "fee_dispute", "function_fault",
              "balance_query", "other")

#: Everything that shapes a trained model besides the data; part of the version.
DEFAULT_PARAMS: dict[str, Any] = {
    "char_ngrams": [1, 3],
    "word_ngrams": [1, 2],
    "min_df": 2,
    "svm_C": 1.0,
    "calibration": "sigmoid",
    "calibration_folds": 5,
    "random_state": 0,
}


class Prediction(msgspec.Struct, frozen=True):
    category: str
    confidence: float
    runner_up: str
    runner_up_confidence: float
    formal_complaint: bool
    formal_reason: str = ""


def build_pipeline(params: dict[str, Any], smallest_category: int | None = None):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    features = FeatureUnion([
        ("chars", TfidfVectorizer(analyzer="char", ngram_range=tuple(params["char_ngrams"]), sublinear_tf=True,
                                  min_df=params["min_df"], lowercase=False, dtype=np.float64)),
        ("words", TfidfVectorizer(analyzer="word", token_pattern=r"[a-z][a-z']+", ngram_range=tuple(params["word_ngrams"]),
                                  sublinear_tf=True, min_df=params["min_df"], lowercase=False, dtype=np.float64)),
    ])
    svm = LinearSVC(C=params["svm_C"], random_state=params["random_state"])
    n_folds = params["calibration_folds"]
    if smallest_category is not None:
        # a small training set (tests, a new category) calibrates over fewer folds rather than fail
        n_folds = max(2, min(n_folds, smallest_category))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=params["random_state"])
    classifier = CalibratedClassifierCV(svm, method=params["calibration"], cv=folds)
    return Pipeline([("features", features), ("classify", classifier)])


def fit_pipeline(records: Sequence[dict], params: dict[str, Any]):
    labels = [r["category"] for r in records]
    counts = Counter(labels)
    if len(counts) < 3 or min(counts.values()) < 2:
        raise ValueError(f"training needs at least 3 categories with 2 messages each, got {dict(counts)}")
    pipeline = build_pipeline(params, min(counts.values()))
    pipeline.fit([prepare(r["text"]) for r in records], labels)
    return pipeline


#: texts whose arithmetic is done together at most, and their characters at most: a batch's arrays
#: hold a few numbers per feature found (~150 a corpus text, at most ~4 a character); a longer text
#: is a batch alone, as before batches
_BATCH = 64
_BATCH_CHARS = 8_000


class _FastVectoriser:
    """A fitted TfidfVectorizer's n-gram counting (its vocabulary, idf weights and place in the
    model's feature space), without scikit-learn's per-call checks and sparse-matrix assembly
    (~2.5 ms -> ~0.1 ms a message); the tf x idf arithmetic is ``CategoryModel._probabilities``."""

    def __init__(self, analyse: Callable[[str], list[str]], vocabulary: dict[str, int], idf: Any,
                 offset: int) -> None:
        self.analyse = analyse
        self.vocabulary = vocabulary
        self.idf = idf
        self.offset = offset
        #: the vocabulary with the indices of the model's whole feature space (``offset`` added)
        self.placed = vocabulary if offset == 0 else {gram: index + offset for gram, index in vocabulary.items()}
        #: character n-grams counted with numpy (``compact.CharCodes``), in the whole feature space;
        #: None: counted with the dictionary (``counts``)
        self.char_codes: compact.CharCodes | None = None
        if isinstance(analyse, compact.Analyser) and compact.CharCodes.covers(analyse):
            try:
                self.char_codes = compact.CharCodes(analyse, self.placed)
            except compact.NotCompactable:
                pass

    @classmethod
    def of(cls, vectoriser: Any, offset: int) -> "_FastVectoriser":
        if not (vectoriser.sublinear_tf and vectoriser.norm == "l2" and vectoriser.use_idf and not vectoriser.binary):
            raise ValueError("only sublinear, idf-weighted, L2-normalised vectorisers")
        try:
            analyse: Callable[[str], list[str]] = compact.Analyser.of(vectoriser)
        except compact.NotCompactable:
            analyse = vectoriser.build_analyzer()
        return cls(analyse, vectoriser.vocabulary_, vectoriser.idf_, offset)

    def counts(self, text: str, *, placed: bool = False) -> dict[int, int]:
        """How often each of the text's n-grams in the vocabulary appears, by index (``placed``: in
        the model's whole feature space), in the order they first appear."""
        vocabulary = self.placed if placed else self.vocabulary
        if isinstance(self.analyse, compact.Analyser):
            return self.analyse.counts(text, vocabulary)
        counts: dict[int, int] = {}
        for gram in self.analyse(text):
            index = vocabulary.get(gram)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        return counts


def sparse_product(values: np.ndarray, indices: np.ndarray, indptr: np.ndarray, weights: np.ndarray,
                   out: np.ndarray) -> None:
    """``out += rows @ weights``, ``rows`` the CSR matrix (``values``, ``indices``, ``indptr``) of
    shape (len(out), len(weights)). scipy's own kernel where it is found as this scipy has it
    (the arrays' types as the kernel takes them: one index type, float64, C order): a csr_array's
    construction checks its arrays in Python, ~50 µs a call, more than the product costs at a
    batch's size (bench/RESULTS.md, twenty-fourth pass); else through csr_array."""
    if (_csr_matvecs is not None and indices.dtype == indptr.dtype and indices.dtype in (np.int32, np.int64)
            and values.dtype == weights.dtype == out.dtype == np.float64
            and weights.flags.c_contiguous and out.flags.c_contiguous and len(indptr) == len(out) + 1):
        _csr_matvecs(len(out), len(weights), weights.shape[1], indptr, indices, values, weights.reshape(-1),
                     out.reshape(-1))
        return
    out += csr_array((values, indices, indptr), shape=(len(out), len(weights))) @ weights


def _joined_idf(fast: Sequence[_FastVectoriser]) -> np.ndarray:
    """Every vectoriser's idf weights side by side, indexed as the model's whole feature space."""
    return np.concatenate([np.asarray(f.idf, dtype=np.float64) for f in fast]) if fast else np.zeros(0)


@dataclass
class _Calibrated:
    """One fold's linear SVM and its per-class sigmoid, as plain arrays."""
    coef: Any  # (classes, features), or (1, features) for two classes
    intercept: Any
    a: Any  # sigmoid slope per class
    b: Any


class CategoryModel:
    """A fitted categoriser. ``predict(text)`` gives the category, its probability and the runner-up,
    and the formal-complaint flag with the cue that decided it.

    Made from a fitted pipeline (training, ``model.joblib``) or from its compact arrays
    (``from_compact``: no scikit-learn needed); both predict with the same numpy arithmetic."""

    pipeline: Any = None

    def __init__(self, pipeline: Any, version: str = "", manifest: dict | None = None) -> None:
        self.pipeline = pipeline
        self.version = version
        self.manifest = manifest or {}
        features = pipeline.named_steps["features"]
        self._vectorisers = [t for _, t in features.transformer_list]
        classifier = pipeline.named_steps["classify"]
        self.classes: tuple[str, ...] = tuple(str(c) for c in classifier.classes_)
        self._fast: list[_FastVectoriser] = []
        offset = 0
        for vectoriser in self._vectorisers:
            self._fast.append(_FastVectoriser.of(vectoriser, offset))
            offset += len(vectoriser.vocabulary_)
        self._idf = _joined_idf(self._fast)
        folds: list[_Calibrated] = []
        for calibrated in classifier.calibrated_classifiers_:
            est = calibrated.estimator
            if len(self.classes) < 3 or tuple(str(c) for c in est.classes_) != self.classes:
                folds = []  # a shape the arrays below do not cover: scikit-learn's own path
                break
            folds.append(_Calibrated(
                coef=est.coef_, intercept=est.intercept_,
                a=np.array([c.a_ for c in calibrated.calibrators]), b=np.array([c.b_ for c in calibrated.calibrators])))
        self._n_folds = len(folds)
        if folds:
            # every fold's weights side by side, one row per feature: one product scores all folds
            self._weights = np.ascontiguousarray(np.hstack([f.coef.T for f in folds]))
            self._intercepts = np.concatenate([f.intercept for f in folds])
            self._a = np.concatenate([f.a for f in folds])
            self._b = np.concatenate([f.b for f in folds])

    # -- the compact form ---------------------------------------------------------------------------

    def compact_arrays(self) -> dict[str, Any]:
        """What ``from_compact`` needs, as plain arrays (``compact.NotCompactable`` if this model's
        shape is not covered: it is then used through its pipeline)."""
        if not self._n_folds:
            raise compact.NotCompactable("fewer than three classes or folds of differing classes")
        arrays: dict[str, Any] = {
            "format": np.array(compact.FORMAT), "classes": np.array(self.classes), "n_folds": np.array(self._n_folds),
            "weights": self._weights, "intercepts": self._intercepts, "a": self._a, "b": self._b,
            "n_vectorisers": np.array(len(self._fast)),
        }
        for i, fast in enumerate(self._fast):
            if not isinstance(fast.analyse, compact.Analyser):
                raise compact.NotCompactable("an analyser the compact form does not reproduce")
            terms = sorted(fast.vocabulary, key=fast.vocabulary.__getitem__)
            arrays[f"spec_{i}"] = compact.encode_spec(fast.analyse)
            arrays[f"terms_{i}"] = np.array(terms, dtype=str)
            arrays[f"idf_{i}"] = np.asarray(fast.idf, dtype=np.float64)
        return arrays

    @classmethod
    def from_compact(cls, arrays: dict[str, Any], version: str = "", manifest: dict | None = None) -> "CategoryModel":
        model = cls.__new__(cls)
        model.pipeline = None
        model.version = version
        model.manifest = manifest or {}
        model._vectorisers = []
        model.classes = tuple(str(c) for c in arrays["classes"].tolist())
        model._fast = []
        offset = 0
        for i in range(int(arrays["n_vectorisers"])):
            terms = arrays[f"terms_{i}"].tolist()
            vocabulary = dict(zip(terms, range(len(terms))))
            model._fast.append(_FastVectoriser(compact.decode_spec(arrays[f"spec_{i}"]), vocabulary,
                                               arrays[f"idf_{i}"], offset))
            offset += len(terms)
        model._idf = _joined_idf(model._fast)
        model._n_folds = int(arrays["n_folds"])
        model._weights = np.ascontiguousarray(arrays["weights"])
        model._intercepts, model._a, model._b = arrays["intercepts"], arrays["a"], arrays["b"]
        if model._weights.shape != (offset, model._n_folds * len(model.classes)):
            raise compact.NotCompactable(f"weights of shape {model._weights.shape} do not fit the vocabulary")
        return model

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities in ``self.classes`` order, one row per text (the numbers the
        pipeline's ``predict_proba`` gives)."""
        prepared = [prepare(t) for t in texts]
        if not self._n_folds:
            return self.pipeline.predict_proba(prepared)
        batches, start, chars = [], 0, 0
        for end, text in enumerate(prepared):  # at most _BATCH texts and _BATCH_CHARS characters a batch
            if end > start and (end - start == _BATCH or chars + len(text) > _BATCH_CHARS):
                batches.append(self._probabilities(prepared[start:end]))
                start, chars = end, 0
            chars += len(text)
        batches.append(self._probabilities(prepared[start:]))
        return batches[0] if len(batches) == 1 else np.concatenate(batches)

    def _probabilities(self, prepared: Sequence[str]) -> np.ndarray:
        """Prepared texts' class probabilities, one row each, in as few numpy calls for the whole
        batch as the arithmetic allows (each costs a microsecond or two on arrays this small): every
        text's features as one array ordered by text (a text's vectorisers in order), each text's
        part of each vectoriser L2-normalised, one sparse product (texts x features) with every
        fold's weights for the decision values. A text's figures do not depend on the others in its
        batch (each row of the product runs over its own features only)."""
        k, n_parts = len(prepared), len(self._fast)
        owners, indices, counts = [], [], []
        for fast in self._fast:
            if fast.char_codes is not None:
                part_owners, part_indices, part_counts = fast.char_codes.counts_many(prepared)
            else:
                found = [fast.counts(text, placed=True) for text in prepared]
                sizes = list(map(len, found))
                part_owners = np.repeat(np.arange(k), sizes)
                part_indices = np.fromiter(chain.from_iterable(found), dtype=np.intp, count=len(part_owners))
                part_counts = np.fromiter(chain.from_iterable(f.values() for f in found), dtype=np.float64,
                                          count=len(part_owners))
            owners.append(part_owners)
            indices.append(part_indices)
            counts.append(part_counts)
        decision = np.tile(self._intercepts, (k, 1))
        owner = np.concatenate(owners)
        if len(owner):
            # segment: (text, vectoriser); rows ordered by text, a text's vectorisers in order
            segment = owner * n_parts + np.repeat(np.arange(n_parts), list(map(len, owners)))
            joined, tf = np.concatenate(indices), np.concatenate(counts)
            if k > 1:
                order = np.argsort(segment, kind="stable")
                segment, owner, joined, tf = segment[order], owner[order], joined[order], tf[order]
            values = (1.0 + np.log(tf)) * self._idf[joined]  # sublinear tf x idf
            values /= np.sqrt(np.bincount(segment, weights=values * values, minlength=k * n_parts))[segment]
            # each text's features times the weights: one sparse (texts x features) product, not a
            # gather of every feature's row of weights (a text's ~200 rows of 35 numbers) and a sum
            # (~22 -> ~6 µs a text); the same sums up to rounding (~1e-15). Its rows' bounds are
            # found in ``owner``, sorted by text above (one text: all zeros)
            sparse_product(values, joined, np.searchsorted(owner, np.arange(k + 1)), self._weights, decision)
        # scikit-learn's sigmoid calibration per class and fold, normalised per fold, averaged
        proba = (1.0 / (1.0 + np.exp(decision * self._a + self._b))).reshape(k, self._n_folds, len(self.classes))
        norm = proba.sum(axis=2, keepdims=True)
        if norm.all():
            proba /= norm
        else:  # (a fold whose every sigmoid underflowed: scikit-learn's uniform answer for it)
            proba = np.divide(proba, norm, out=np.full_like(proba, 1.0 / len(self.classes)), where=norm != 0)
        return proba.sum(axis=1) / self._n_folds  # (what mean(axis=1) computes, without its overhead)

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        """``predict`` of each text, their arithmetic done together (``_probabilities``)."""
        return [self._prediction(text, row) for text, row in zip(texts, self.probabilities(texts).tolist())]

    def _prediction(self, text: str, row: list[float]) -> Prediction:
        # the two likeliest; of equal ones the first in class order (argsort's "stable")
        best, second = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:2]
        verdict = formal_verdict(text)
        return Prediction(self.classes[best], round(row[best], 4), self.classes[second], round(row[second], 4),
                          verdict.formal_complaint, verdict.reason)

    def predict(self, text: str) -> Prediction:
        return self.predict_many([text])[0]

    def categorise(self, text: str) -> str:
        """The category alone (what repeat-report scoring and the worker's matching take)."""
        return self.predict(text).category

    @property
    def as_callable(self) -> Callable[[str], str]:
        return self.categorise


__all__ = ["CATEGORIES", "DEFAULT_PARAMS", "CategoryModel", "Prediction", "build_pipeline", "fit_pipeline",
           "sparse_product"]
