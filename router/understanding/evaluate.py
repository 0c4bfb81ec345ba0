"""Scores on a labelled file in shared/corpus/dev.jsonl's format: categories (per-category
precision / recall / F1, macro-F1, the confusion matrix, accuracy per channel), the formal-complaint
flag, and repeat reports as pairwise precision / recall.

Repeat-report keys come from ``router.understanding.repeat_scoring.predicted_groups`` (records in
file order, per customer, through the worker's matching code); it is imported when asked for, and
the report says "repeat scoring unavailable" while it does not exist.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from router.understanding.model import CATEGORIES, Prediction


class Categoriser(Protocol):
    def predict_many(self, texts: Sequence[str]) -> list[Prediction]: ...

    def categorise(self, text: str) -> str: ...


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def pairwise_scores(records: Sequence[dict], predicted: dict[str, str | None]) -> dict[str, Any]:
    """Over all pairs of records: a pair is positive when both share a non-null ``dup_group``;
    predicted positive when both have the same predicted key. Counted by cells, not pairs, so a
    corpus of thousands is instant."""
    def pairs(n: int) -> int:
        return n * (n - 1) // 2

    gold = Counter(r["dup_group"] for r in records if r.get("dup_group"))
    keys = Counter(predicted.get(r["id"]) for r in records if predicted.get(r["id"]) is not None)
    both = Counter((r["dup_group"], predicted.get(r["id"])) for r in records
                   if r.get("dup_group") and predicted.get(r["id"]) is not None)
    true_pairs = sum(pairs(n) for n in gold.values())
    predicted_pairs = sum(pairs(n) for n in keys.values())
    tp = sum(pairs(n) for n in both.values())
    return {"precision": _ratio(tp, predicted_pairs), "recall": _ratio(tp, true_pairs), "true_pairs": true_pairs,
            "predicted_pairs": predicted_pairs, "correct_pairs": tp}


def repeat_scores(records: Sequence[dict], categorise: Callable[[str], str]) -> dict[str, Any] | None:
    """Pairwise scores of the worker's repeat matching, or None while repeat_scoring is not there."""
    try:
        from router.understanding.repeat_scoring import predicted_groups
    except ImportError as exc:
        if getattr(exc, "name", None) not in ("router.understanding.repeat_scoring", None):
            raise  # the module is there but something it imports is broken: say so
        return None
    return pairwise_scores(records, predicted_groups(list(records), categorise))


@dataclass
class Evaluation:
    records: list[dict]
    predictions: list[Prediction]
    repeats: dict[str, Any] | None = None
    repeats_asked: bool = True
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = {r["category"] for r in self.records} | {p.category for p in self.predictions}
        self.labels = [c for c in CATEGORIES if c in seen] + sorted(seen - set(CATEGORIES))

    def per_category(self) -> dict[str, dict[str, Any]]:
        out = {}
        for label in self.labels:
            tp = sum(1 for r, p in zip(self.records, self.predictions) if r["category"] == label and p.category == label)
            predicted = sum(1 for p in self.predictions if p.category == label)
            support = sum(1 for r in self.records if r["category"] == label)
            precision, recall = _ratio(tp, predicted), _ratio(tp, support)
            out[label] = {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": support}
        return out

    def macro_f1(self) -> float:
        """Mean F1 over the categories that occur in the labels or the predictions (all 7 on a real
        set); a category with support but no correct prediction counts 0."""
        scores = [row["f1"] or 0.0 for row in self.per_category().values()]
        return sum(scores) / len(scores) if scores else 0.0

    def accuracy(self) -> float:
        good = sum(1 for r, p in zip(self.records, self.predictions) if r["category"] == p.category)
        return good / len(self.records) if self.records else 0.0

    def confusion(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {a: {b: 0 for b in self.labels} for a in self.labels}
        for r, p in zip(self.records, self.predictions):
            table[r["category"]][p.category] += 1
        return table

    def per_channel(self) -> dict[str, dict[str, Any]]:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r, p in zip(self.records, self.predictions):
            row = counts[r.get("channel") or "?"]
            row[0] += 1
            row[1] += r["category"] == p.category
        return {ch: {"n": n, "correct": good, "accuracy": good / n} for ch, (n, good) in sorted(counts.items())}

    def formal(self) -> dict[str, Any]:
        pairs = [(bool(r.get("formal_complaint")), p.formal_complaint) for r, p in zip(self.records, self.predictions)]
        tp = sum(1 for gold, pred in pairs if gold and pred)
        fp = sum(1 for gold, pred in pairs if pred and not gold)
        fn = sum(1 for gold, pred in pairs if gold and not pred)
        return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "tp": tp, "fp": fp, "fn": fn}

    def summary(self) -> dict[str, Any]:
        return {
            "records": len(self.records),
            "macro_f1": round(self.macro_f1(), 4),
            "accuracy": round(self.accuracy(), 4),
            "per_category": {k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in row.items()}
                             for k, row in self.per_category().items()},
            "per_channel": {k: {"n": row["n"], "accuracy": round(row["accuracy"], 4)} for k, row in self.per_channel().items()},
            "formal": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.formal().items()},
            **({"repeats": self.repeats} if self.repeats is not None else {}),
        }

    def report(self, title: str = "") -> str:
        def num(value: float | None) -> str:
            return "   -  " if value is None else f"{value:6.3f}"

        lines = []
        if title:
            lines.append(title)
        lines.append(f"== categories ({len(self.records)} messages) ==")
        lines.append(f"{'category':<18} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
        for label, row in self.per_category().items():
            lines.append(f"{label:<18} {num(row['precision']):>9} {num(row['recall']):>7} {num(row['f1']):>7} "
                         f"{row['support']:>8}")
        note = "" if len(self.labels) == len(CATEGORIES) else f" (over the {len(self.labels)} categories present)"
        lines.append(f"macro-F1 {self.macro_f1():.3f}{note}   accuracy {self.accuracy():.3f}")
        lines.append("")
        lines.append("== confusion matrix (rows: labelled, columns: predicted) ==")
        short = [label[:8] for label in self.labels]
        lines.append(f"{'':<18} " + " ".join(f"{s:>8}" for s in short))
        for label, row in self.confusion().items():
            lines.append(f"{label:<18} " + " ".join(f"{row[b]:>8}" for b in self.labels))
        lines.append("")
        lines.append("== accuracy per channel ==")
        for channel, row in self.per_channel().items():
            lines.append(f"{channel:<18} {row['correct']:>4}/{row['n']:<4} {row['accuracy']:.3f}")
        lines.append("")
        formal = self.formal()
        lines.append("== formal complaint flag ==")
        lines.append(f"precision {num(formal['precision']).strip()}   recall {num(formal['recall']).strip()}   "
                     f"(tp {formal['tp']}, fp {formal['fp']}, fn {formal['fn']})")
        lines.append("")
        lines.append("== repeat reports (pairwise over all pairs) ==")
        if self.repeats is None:
            lines.append("repeat scoring unavailable" if self.repeats_asked else "repeat scoring not run")
        else:
            r = self.repeats
            lines.append(f"precision {num(r['precision']).strip()}   recall {num(r['recall']).strip()}   "
                         f"(labelled pairs {r['true_pairs']}, predicted {r['predicted_pairs']}, "
                         f"both {r['correct_pairs']})")
        return "\n".join(lines)

    def errors(self) -> Iterable[tuple[dict, Prediction]]:
        for r, p in zip(self.records, self.predictions):
            if r["category"] != p.category or bool(r.get("formal_complaint")) != p.formal_complaint:
                yield r, p


def evaluate_records(model: Categoriser, records: Sequence[dict], *, repeats: bool = True) -> Evaluation:
    records = list(records)
    for number, record in enumerate(records, 1):
        if "category" not in record:
            raise ValueError(f"record {number} ({record.get('id', '?')}) has no category label")
    predictions = model.predict_many([r["text"] for r in records])
    repeat = repeat_scores(records, model.categorise) if repeats and all("id" in r for r in records) else None
    return Evaluation(records, predictions, repeat, repeats_asked=repeats)


__all__ = ["Evaluation", "evaluate_records", "pairwise_scores", "repeat_scores"]
