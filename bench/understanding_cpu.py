"""CPU per text of what the worker computes from a message's words (issue 21): the categoriser, the
PII masking, the repeat-report fingerprint and lookup, the topic terms and cues, the amounts.

    .venv/bin/python bench/understanding_cpu.py [--base DIR] [--rounds 3] [--check]

Texts: every text of data/corpus/*.jsonl and of ../shared/corpus/dev.jsonl when it is there
(~2,300, zh/en, SMS to e-mail length). Each step runs once per text, over all texts in turn (so a
memo of a few recent texts never answers a text a second time from an earlier pass), three
passes, the fastest kept; CPU time (``time.process_time``), not wall time.

"per message" is what the worker computes for one new message: the categoriser, the repeat check
against one open case of the same customer (another corpus text), the two masked copies the
plugin manager makes (the message's text, then the complaint's) and the new case's fingerprint;
a customer with no open case (every message of bench/cost.py) has no repeat check.

``--base DIR``: another checkout (e.g. ``git worktree add /tmp/base <commit>``) measured in the
same run, alternately with this one (base, this, base, this, ...), each in a process of its own;
the median of the rounds is printed side by side. ``--check``: instead of timing, every step's
answer on every text is compared between the two trees (categories, confidences to 1e-12, the
formal flag and its reason, masked texts, fingerprints, repeat matches, terms, cues, amounts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
SHARED_DEV = ROOT.parent / "shared" / "corpus" / "dev.jsonl"


def corpus_texts() -> list[str]:
    paths = sorted((ROOT / "data" / "corpus").glob("*.jsonl")) + ([SHARED_DEV] if SHARED_DEV.is_file() else [])
    texts = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


# -- in the measured tree's process -------------------------------------------------------------------


def _child(tree: Path, models: Path, mode: str, passes: int) -> dict[str, Any]:
    sys.path.insert(0, str(tree))
    from datetime import datetime, timezone

    from normalizer.extract import extract_amounts, extract_transaction_id
    from normalizer.inbound import build_message
    from normalizer.pii import find_pii, mask_pii
    from normalizer.schema import ComplaintStatus, Complaint, Contact, MessageEntry
    from router import repeat_signals, repeats
    from router.understanding import artefacts
    from router.understanding.formal import formal_verdict
    from router.understanding.textprep import prepare

    if not repeats.__file__.startswith(str(tree)):
        raise SystemExit(f"imported {repeats.__file__}, not from {tree}")
    texts = corpus_texts()
    model = artefacts.load_current(models)
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    contact = Contact(kind="app_user", value="u1")
    messages = [build_message(message_id=f"msg_{i:06d}", channel="app", sender=contact, text=t, received_at=now)
                for i, t in enumerate(texts)]

    def complaint(i: int) -> Complaint:
        return Complaint(id=f"cmp_{i:06d}", case_number=f"C-20261201-{i:06d}", status=ComplaintStatus.received,
                         category="other", formal_complaint=False, channel="app", customer_id="cust_1",
                         contact=contact, language="zh", created_at=now, updated_at=now,
                         amount=messages[i].amount, transaction_id=messages[i].transaction_id,
                         messages=[MessageEntry(message_id=messages[i].id, channel="app", text=texts[i], received_at=now)])

    complaints = [complaint(i) for i in range(len(texts))]
    now_ms = 1_800_000_000_000
    # each message's customer has one open case: the one the previous corpus text opened an hour ago
    open_case = [{f"cmp_{i - 1:06d}": repeats.decode(repeats.fingerprint_of(complaints[i - 1], now_ms - 3_600_000))}
                 for i in range(len(texts))]

    def per_message(i: int) -> None:
        category = model.predict(texts[i]).category
        repeats.find_repeat(open_case[i], messages[i], category, now_ms, 72 * 3_600_000, possible=True)
        mask_pii(texts[i])  # the plugin manager's masked message
        mask_pii(complaints[i].messages[0].text)  # ... and masked complaint
        repeats.fingerprint_of(complaints[i], now_ms)

    def new_customer(i: int) -> None:
        model.predict(texts[i])
        mask_pii(texts[i])
        mask_pii(complaints[i].messages[0].text)
        repeats.fingerprint_of(complaints[i], now_ms)

    steps: dict[str, Callable[[int], Any]] = {
        "per message (all below, as the worker calls them)": per_message,
        "per message of a customer with no open case": new_customer,
        "categoriser: predict": lambda i: model.predict(texts[i]),
        "  prepare (fold, numbers as tokens)": lambda i: prepare(texts[i]),
        "  formal_verdict": lambda i: formal_verdict(texts[i]),
        "repeat check against one open case": lambda i: repeats.find_repeat(
            open_case[i], messages[i], "other", now_ms, 72 * 3_600_000, possible=True),
        "fingerprint_of (new case)": lambda i: repeats.fingerprint_of(complaints[i], now_ms),
        "mask_pii, once": lambda i: mask_pii(texts[i]),
        "mask_pii, 3x the same text": lambda i: (mask_pii(texts[i]), mask_pii(texts[i]), mask_pii(texts[i])),
        "repeat_signals.terms": lambda i: repeat_signals.terms(texts[i]),
        "follow_up_cue + new_problem_cue": lambda i: (repeat_signals.follow_up_cue(texts[i]),
                                                      repeat_signals.new_problem_cue(texts[i])),
        "extract_amounts": lambda i: extract_amounts(texts[i]),
        "extract_transaction_id": lambda i: extract_transaction_id(texts[i]),
    }
    if mode == "check":
        out: dict[str, list[Any]] = {}
        for i, text in enumerate(texts):
            p = model.predict(text)
            proba = model.probabilities([text])[0].tolist()
            out.setdefault("predict", []).append([p.category, p.confidence, p.runner_up, p.runner_up_confidence,
                                                  p.formal_complaint, p.formal_reason])
            out.setdefault("probabilities", []).append(proba)
            out.setdefault("prepare", []).append(prepare(text))
            out.setdefault("mask_pii", []).append(mask_pii(text))
            out.setdefault("find_pii", []).append([list(f) for f in find_pii(text)])
            out.setdefault("find_pii_numbers", []).append([list(f) for f in find_pii(text, ("card", "phone", "id_number"))])
            out.setdefault("fingerprint", []).append(repeats.fingerprint_of(complaints[i], now_ms).decode())
            try:
                match = repeats.find_repeat(open_case[i], messages[i], p.category, now_ms, 72 * 3_600_000,
                                            possible=True)
                answer = None if match is None else [match.complaint_id, match.reason, match.score, match.detail,
                                                     match.confident]
            except Exception as exc:  # noqa: BLE001 - a failure is an answer too
                answer = f"raised {type(exc).__name__}"
            out.setdefault("find_repeat", []).append(answer)
            out.setdefault("terms", []).append(repeat_signals.terms(text))
            out.setdefault("cues", []).append([repeat_signals.follow_up_cue(text), repeat_signals.new_problem_cue(text)])
            out.setdefault("transaction_id", []).append(extract_transaction_id(text))
            out.setdefault("amounts", []).append([[a.start, a.end, str(a.value), a.currency, a.kind]
                                                  for a in extract_amounts(text)])
        return out
    figures: dict[str, float] = {}
    indices = range(len(texts))
    for name, step in steps.items():
        best = float("inf")
        for _ in range(passes):
            started = time.process_time()
            for i in indices:
                try:
                    step(i)
                except Exception:  # noqa: BLE001 - a step that fails on a text costs what it cost
                    pass
            best = min(best, time.process_time() - started)
        figures[name] = best / len(texts) * 1000
    return figures


# -- the parent: alternate the trees, print the table ----------------------------------------------------


def _run(tree: Path, models: Path, mode: str, passes: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", str(tree), "--models", str(models), "--mode", mode,
                          "--passes", str(passes)], capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def _differences(base: dict[str, list[Any]], this: dict[str, list[Any]], texts: list[str]) -> int:
    import math

    wrong = 0
    for key in base:
        for i, (a, b) in enumerate(zip(base[key], this[key])):
            same = a == b
            if key == "probabilities":
                same = all(math.isclose(x, y, rel_tol=0, abs_tol=1e-12) for x, y in zip(a, b))
            if not same:
                wrong += 1
                if wrong <= 20:
                    print(f"  {key} differs on text {i} ({texts[i][:60]!r}):\n    base {a!r}\n    this {b!r}")
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, help="another checkout, measured alternately with this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="compare every answer with --base's instead of timing")
    parser.add_argument("--models", type=Path, help="a models directory (default: the default model, trained once)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child.resolve(), args.models, args.mode, args.passes), ensure_ascii=False))
        return
    texts = corpus_texts()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or Path(tmp) / "models"
        trees = ([("base", args.base.resolve())] if args.base else []) + [("this", ROOT)]
        print(f"{len(texts)} texts; trees: " + ", ".join(f"{n} {p}" for n, p in trees))
        if args.check:
            if not args.base:
                raise SystemExit("--check needs --base")
            base, this = (_run(path, models, "check", 1) for _, path in trees)
            wrong = _differences(base, this, texts)
            print(f"{sum(len(v) for v in base.values())} answers compared, {wrong} differ")
            raise SystemExit(1 if wrong else 0)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for r in range(args.rounds):
            for name, path in trees:
                rounds[name].append(_run(path, models, "time", args.passes))
                print(f"  round {r + 1}: {name} done", file=sys.stderr)
        steps = list(rounds["this"][0])
        print(f"\nCPU per text, ms (median of {args.rounds} rounds; each the fastest of {args.passes} passes)")
        header = f"{'step':52s}" + "".join(f"{name:>10s}" for name, _ in trees) + ("     ratio" if args.base else "")
        print(header)
        for step in steps:
            values = [statistics.median(r[step] for r in rounds[name]) for name, _ in trees]
            line = f"{step:52s}" + "".join(f"{v:10.4f}" for v in values)
            if args.base:
                line += f"{values[1] / values[0]:10.2f}"
            print(line)


if __name__ == "__main__":
    main()
