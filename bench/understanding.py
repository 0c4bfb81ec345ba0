"""The learned categoriser and the formal-complaint flag, measured (issue 19).

    .venv/bin/python bench/understanding.py [--dev ../shared/corpus/dev.jsonl] [--data 'data/corpus/train_*.jsonl']

Two sets:
- our held-out split: the customers router.understanding.corpus.split keeps out (15 %, by a hash of
  the customer key), scored with a model trained on the rest of our corpus;
- shared/corpus/dev.jsonl, scored with the model trained on all of our corpus. No training ever sees
  dev.jsonl, and nothing is tuned on it: its figures are reported as they come.

Beside each, the keyword rules of router/categorise.py (the categoriser this replaces) for
comparison. Then the time of one single-message ``predict`` (p50 / p99, goal p99 <= 2 ms), the
training time and the model's size on disk. Takes about half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.categorise import categorise as keyword_categorise  # noqa: E402
from router.understanding import artefacts, corpus  # noqa: E402
from router.understanding.evaluate import Evaluation, evaluate_records  # noqa: E402
from router.understanding.formal import formal_verdict  # noqa: E402
from router.understanding.model import DEFAULT_PARAMS, CategoryModel, Prediction, fit_pipeline  # noqa: E402


class KeywordRules:
    """router/categorise.py's keyword list and formal words, in the evaluator's shape."""

    def predict_many(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            result = keyword_categorise(text)
            out.append(Prediction(result.category, 1.0, "", 0.0, result.formal_complaint))
        return out

    def categorise(self, text: str) -> str:
        return keyword_categorise(text).category


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(name: str, ev: Evaluation) -> str:
    channels = ev.per_channel()
    voice = channels.get("voice_transcript")
    voice_text = f"{voice['correct']}/{voice['n']}" if voice else "-"
    others = [row for ch, row in channels.items() if ch != "voice_transcript"]
    other_acc = sum(r["correct"] for r in others) / max(1, sum(r["n"] for r in others))
    formal = ev.formal()
    repeats = ev.repeats
    rep = f"{_fmt(repeats['precision'])} / {_fmt(repeats['recall'])}" if repeats else "unavailable"
    return (f"| {name} | {len(ev.records)} | {ev.macro_f1():.3f} | {ev.accuracy():.3f} | {voice_text} "
            f"({(voice['accuracy'] if voice else 0):.2f}) | {other_acc:.2f} | {_fmt(formal['precision'])} / "
            f"{_fmt(formal['recall'])} | {rep} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=corpus.DEFAULT_GLOB)
    parser.add_argument("--dev", default=str(ROOT.parent / "shared" / "corpus" / "dev.jsonl"))
    parser.add_argument("--passes", type=int, default=5, help="timing: passes over the dev texts")
    args = parser.parse_args(argv)

    files = corpus.data_files(args.data)
    records = corpus.load_records(files)
    train_part, heldout = corpus.split(records)
    print(f"corpus: {len(records)} messages in {len(files)} files; held-out split {len(heldout)} "
          f"(customers never trained on), trained on {len(train_part)}", flush=True)

    measured = CategoryModel(fit_pipeline(train_part, DEFAULT_PARAMS))
    rows = [_row("learned, our held-out split", evaluate_records(measured, heldout)),
            _row("keyword rules, our held-out split", evaluate_records(KeywordRules(), heldout))]

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = artefacts.train(args.data, Path(tmp))
        training = time.perf_counter() - started
        size = (Path(tmp) / model.version / artefacts.MODEL_FILE).stat().st_size

    dev_path = Path(args.dev)
    dev = corpus.load_records(dev_path) if dev_path.exists() else []
    if dev:
        rows.append(_row("learned (all our corpus), dev.jsonl", evaluate_records(model, dev)))
        rows.append(_row("keyword rules, dev.jsonl", evaluate_records(KeywordRules(), dev)))
    else:
        print(f"{dev_path}: not found, dev figures skipped")

    texts = [r["text"] for r in (dev or heldout)]
    for text in texts[:20]:
        model.predict(text)  # warm-up
    predict_ms, formal_ms = [], []
    for _ in range(args.passes):
        for text in texts:
            t0 = time.perf_counter()
            model.predict(text)
            predict_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            formal_verdict(text)
            formal_ms.append((time.perf_counter() - t0) * 1000)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    print()
    print(f"model {model.version} (scikit-learn {model.manifest['libraries']['sklearn']}, "
          f"params {DEFAULT_PARAMS})")
    print()
    print("| set | messages | macro-F1 | accuracy | voice transcripts right | other channels | formal P / R "
          "| repeat pairs P / R |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print("| figure | value |")
    print("|---|---|")
    print(f"| predict one message (category, confidence, runner-up, formal flag), p50 / p99 | "
          f"{pct(predict_ms, 0.5):.3f} / {pct(predict_ms, 0.99):.3f} ms ({len(predict_ms)} calls) |")
    print(f"| of which the formal-flag rules, p50 / p99 | {pct(formal_ms, 0.5):.3f} / {pct(formal_ms, 0.99):.3f} ms |")
    print(f"| training (held-out fit + final fit), wall | {training:.1f} s |")
    print(f"| model on disk (joblib, compressed) | {size / 1e6:.2f} MB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
