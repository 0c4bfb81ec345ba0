"""The categoriser as plain arrays: everything a prediction needs, loaded without scikit-learn and
without unpickling anything.

A trained model is stored twice (``router.understanding.artefacts``): the fitted scikit-learn
pipeline (``model.joblib``, for evaluation, dry runs and retraining) and this compact form
(``compact.npz``): per vectoriser its n-gram analyser settings, vocabulary and idf weights, and the
calibrated linear models side by side. Loading it costs numpy only (~0.2 s of CPU against ~3.5 s
for importing scikit-learn and unpickling the pipeline), which is what every worker pays at
start-up. ``np.load(allow_pickle=False)`` runs no code from the file.

The analysers here reproduce scikit-learn's ``TfidfVectorizer`` analysers for the settings we use
(``analyzer`` "char" or "word" with a token pattern, no lower-casing, no accent stripping, no stop
words); a vectoriser with other settings is refused (``NotCompactable``) and that model is used
through its pipeline. A test checks both analysers against scikit-learn's on the whole corpus.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

COMPACT_FILE = "compact.npz"
FORMAT = 1

_WHITE_SPACES = re.compile(r"\s\s+")


class NotCompactable(ValueError):
    """The fitted model has a shape the compact form does not cover."""


@dataclass(frozen=True)
class Analyser:
    """A text's n-grams, as the fitted vectoriser makes them."""

    kind: str  # "char" or "word"
    low: int
    high: int
    token_pattern: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tokens", re.compile(self.token_pattern) if self.kind == "word" else None)

    @classmethod
    def of(cls, vectoriser: Any) -> "Analyser":
        plain = (vectoriser.preprocessor is None and vectoriser.tokenizer is None and not vectoriser.lowercase
                 and vectoriser.strip_accents is None and vectoriser.stop_words is None
                 and vectoriser.input == "content")
        if not plain or vectoriser.analyzer not in ("char", "word"):
            raise NotCompactable(f"vectoriser settings not covered: analyzer={vectoriser.analyzer!r}")
        low, high = vectoriser.ngram_range
        return cls(vectoriser.analyzer, int(low), int(high),
                   vectoriser.token_pattern if vectoriser.analyzer == "word" else "")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high, "token_pattern": self.token_pattern}

    def __call__(self, text: str) -> list[str]:
        if self.kind == "char":
            return self._char_ngrams(_WHITE_SPACES.sub(" ", text))
        tokens = self._tokens.findall(text)  # type: ignore[attr-defined]
        if self._tokens.groups == 1:  # type: ignore[attr-defined] - scikit-learn keeps the group
            tokens = [t if isinstance(t, str) else t[0] for t in tokens]
        return self._word_ngrams(tokens)

    def counts(self, text: str, vocabulary: dict[str, int]) -> dict[int, int]:
        """How often each of the text's n-grams in ``vocabulary`` appears, by vocabulary index, in
        the order they first appear in ``self(text)`` (what counting ``self(text)`` gram by gram
        gives): the n-grams are made and looked up by C loops (``zip``, ``map``, ``Counter``) instead
        of one Python step each (~0.09 -> ~0.05 ms for a text's character n-grams)."""
        get = vocabulary.get
        counts: Counter[int | None] = Counter()
        if self.kind == "char":
            units: Any = _WHITE_SPACES.sub(" ", text)
            join = "".join
        else:
            units = self._tokens.findall(text)  # type: ignore[attr-defined]
            if self._tokens.groups == 1:  # type: ignore[attr-defined]
                units = [t if isinstance(t, str) else t[0] for t in units]
            join = " ".join
        low = self.low
        if low == 1:
            counts.update(map(get, units))
            low = 2
        for n in range(low, min(self.high, len(units)) + 1):
            counts.update(map(get, map(join, zip(*(units[k:] for k in range(n))))))
        counts.pop(None, None)
        return counts  # type: ignore[return-value]

    def _char_ngrams(self, text: str) -> list[str]:
        low, grams = self.low, []
        if low == 1:
            grams = list(text)
            low = 2
        for n in range(low, min(self.high + 1, len(text) + 1)):
            grams.extend(text[i:i + n] for i in range(len(text) - n + 1))
        return grams

    def _word_ngrams(self, tokens: list[str]) -> list[str]:
        if self.high == 1:
            return tokens
        low, grams = self.low, []
        if low == 1:
            grams = list(tokens)
            low = 2
        for n in range(low, min(self.high + 1, len(tokens) + 1)):
            grams.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return grams


_CODE_BITS = np.uint64(21)  # a code point plus one (1..0x110000) fits in 21 bits: three in 63
_ONE = np.uint64(1)


class CharCodes:
    """A character n-gram vocabulary (n <= 3) as sorted integer codes, each n-gram its code points
    plus one, 21 bits apiece: a text's n-grams are made, looked up and counted by a few numpy
    calls on arrays instead of a string and a dictionary probe each (the probes miss the CPU's
    caches in a worker that does other work between two messages). Codes of n-grams of different
    lengths never meet: a code point plus one is never 0, so an n-gram's code needs more bits
    than any shorter one's."""

    def __init__(self, analyser: Analyser, vocabulary: dict[str, int]) -> None:
        if not self.covers(analyser):
            raise NotCompactable(f"character n-grams of {analyser.low}-{analyser.high} not covered")
        self.low, self.high = analyser.low, analyser.high
        codes = np.fromiter((_code(gram) for gram in vocabulary), dtype=np.uint64, count=len(vocabulary))
        order = np.argsort(codes, kind="stable")
        # a code not in the vocabulary is looked up past its end: a sentinel never equal to a code
        self._codes_past = np.append(codes[order], np.uint64(0))
        self.codes = self._codes_past[:-1]  # (the vocabulary's codes, sorted: a view)
        if len(self.codes) > 1 and not (self.codes[1:] != self.codes[:-1]).all():
            raise NotCompactable("two n-grams of one code")
        self._indices_past = np.append(np.fromiter(vocabulary.values(), dtype=np.intp, count=len(vocabulary))[order], -1)
        #: (text, index) pairs sort as one integer: text * span + index
        self._span = int(self._indices_past.max()) + 1 if len(vocabulary) else 1

    @staticmethod
    def covers(analyser: Analyser) -> bool:
        return analyser.kind == "char" and 1 <= analyser.low <= analyser.high <= 3

    def counts(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary indices of the text's n-grams (ascending) and how often each appears: what
        ``Analyser.counts`` gives, as two arrays."""
        _, indices, counts = self.counts_many([text])
        return indices, counts

    def counts_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``counts`` of several texts at once, as three arrays: for each n-gram found, its text (a
        place in ``texts``), its vocabulary index and how often it appears there; ordered by text,
        then index. The texts' code points are one array, their n-grams made and looked up in one
        pass (an n-gram across two texts' boundary left out): a few numpy calls for the whole
        batch instead of a few for each text."""
        units = [_WHITE_SPACES.sub(" ", text) for text in texts]
        points = np.frombuffer("".join(units).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        points += _ONE
        owner = np.repeat(np.arange(len(units)), [len(u) for u in units])
        grams, owners, codes = [], [], points
        for n in range(1, min(self.high, len(points)) + 1):
            if n > 1:
                codes = (codes[:-1] << _CODE_BITS) | points[n - 1:]
            if n >= self.low:
                starts_in = owner[:len(codes)]
                if n > 1 and len(units) > 1:
                    within = starts_in == owner[n - 1:]  # the n-gram's first and last in one text
                    grams.append(codes[within])
                    owners.append(starts_in[within])
                else:
                    grams.append(codes)
                    owners.append(starts_in)
        if not grams:
            return _NO_INDICES, _NO_INDICES, _NO_INDICES
        found = np.concatenate(grams) if len(grams) > 1 else grams[0]
        owner = np.concatenate(owners) if len(owners) > 1 else owners[0]
        # looked up in ascending order: each binary search starts where the last one ended, and the
        # vocabulary's codes are read front to back, not at random (~15 µs a text less in a worker,
        # whose caches other work has emptied); the keys are sorted below whatever their order
        order = found.argsort()
        found, owner = found[order], owner[order]
        place = self.codes.searchsorted(found)
        hit = self._codes_past[place] == found
        keys = owner[hit] * self._span + self._indices_past[place][hit]
        if not len(keys):
            return _NO_INDICES, _NO_INDICES, _NO_INDICES
        keys.sort()
        starts = np.flatnonzero(np.concatenate((_FIRST, keys[1:] != keys[:-1])))
        found_keys = keys[starts]
        return found_keys // self._span, found_keys % self._span, np.diff(np.append(starts, len(keys)))


_NO_INDICES = np.zeros(0, dtype=np.intp)
_FIRST = np.ones(1, dtype=bool)


def _code(gram: str) -> int:
    if not 1 <= len(gram) <= 3:
        raise NotCompactable(f"a vocabulary term of {len(gram)} characters")
    code = 0
    for char in gram:
        code = (code << 21) | (ord(char) + 1)
    return code


def save(path: Path, arrays: dict[str, Any]) -> None:
    """Write the arrays ``CategoryModel.compact_arrays`` gives."""
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)


def load(path: Path) -> dict[str, Any]:
    """The arrays of a compact model (no pickled objects are read)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if int(arrays.get("format", np.array(0))) != FORMAT:
        raise NotCompactable(f"{path}: compact format {arrays.get('format')} is not {FORMAT}")
    return arrays


def encode_spec(analyser: Analyser) -> np.ndarray:
    return np.array(json.dumps(analyser.spec()))


def decode_spec(value: np.ndarray) -> Analyser:
    spec = json.loads(str(value))
    return Analyser(spec["kind"], int(spec["low"]), int(spec["high"]), spec.get("token_pattern", ""))


__all__ = ["COMPACT_FILE", "FORMAT", "Analyser", "CharCodes", "NotCompactable", "decode_spec", "encode_spec", "load", "save"]
