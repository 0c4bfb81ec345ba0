"""Repeat reports measured on a labelled corpus (the shared conventions: ``dup_group``,
``not_dup_of``), through the very functions the worker uses.

``predicted_groups`` plays a corpus through the repeat check as the worker would meet it: records
in file order; per customer, each message is built as the normalizer builds an inbound message
(amount, transaction id and language read from the text), categorised, and compared with
``router.repeats.find_repeat`` against that customer's open cases (each known by the fingerprint
``router.repeats.fingerprint_of`` makes when the case opens). A confident match joins the case; any
other message opens a case of its own. Every case stays open (the corpus has no resolutions).

``pairwise`` scores a grouping over all pairs of messages: a pair is positive when both share a
non-null ``dup_group``; a predicted pair whose messages are labelled ``not_dup_of`` one another is
a hard negative merged.

    python -m router.understanding.repeat_scoring data/corpus/train_chat.jsonl [--possible] [--errors]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from itertools import combinations
from typing import Any, Callable, Iterable

from normalizer.extract import extract_amount, extract_transaction_id
from normalizer.language import detect_language
from normalizer.schema import Amount, Complaint, ComplaintStatus, Contact, InboundMessage, MessageEntry
from router import repeats

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
STEP = timedelta(minutes=1)  # between two records of the file: a corpus of a few thousand falls in the window
WINDOW_MS = 72 * 3_600_000  # the worker's default (GATEWAY_REPEAT_WINDOW_HOURS)


def message_of(record: dict[str, Any], received_at: datetime) -> InboundMessage:
    """The inbound message the normalizer would build from the record's text (nothing taken from its labels)."""
    text = record["text"]
    found = extract_amount(text)
    return InboundMessage(
        id=f"msg_{record['id']}", channel=record.get("channel") or "app",
        sender=Contact(kind="customer", value=str(record.get("customer") or record["id"])),
        text=text, language=detect_language(text), received_at=received_at,
        amount=Amount(value=found[0], currency=found[1]) if found else None,
        transaction_id=extract_transaction_id(text),
    )


def complaint_of(message: InboundMessage, category: str, customer: str) -> Complaint:
    """The case a message that repeats nothing opens (what its fingerprint is made from)."""
    return Complaint(
        id=f"cmp_{message.id[4:]}", case_number="C-00000000-000000", status=ComplaintStatus.accepted,
        category=category, formal_complaint=False, channel=message.channel, customer_id=customer,
        contact=message.sender, language=message.language, created_at=message.received_at,
        updated_at=message.received_at, amount=message.amount, transaction_id=message.transaction_id,
        messages=[MessageEntry(message_id=message.id, channel=message.channel, text=message.text,
                               received_at=message.received_at, language=message.language)],
    )


def _confident(match: Any) -> bool:
    return bool(getattr(match, "confident", True))


def predicted_groups(records: list[dict[str, Any]], categorise: Callable[[str], str], *,
                     merge_possible: bool = False, refresh_on_merge: bool = False,
                     outcomes: dict[str, Any] | None = None) -> dict[str, str]:
    """Record id -> the case key it ends up in (the id of the record that opened the case).

    ``merge_possible`` also merges the middle band ("possible repeat"), as if an agent accepted every
    suggestion; ``refresh_on_merge`` renews a case's fingerprint with each message merged into it
    (the worker keeps the one made when the case opened). ``outcomes``, when given, receives each
    record's match (or ``None``)."""
    open_cases: dict[str, dict[str, bytes]] = defaultdict(dict)  # customer -> complaint id -> fingerprint
    cases: dict[str, Complaint] = {}
    groups: dict[str, str] = {}
    for n, record in enumerate(records):
        customer = str(record.get("customer") or record["id"])
        received = START + n * STEP
        message = message_of(record, received)
        category = categorise(record["text"])
        now = int(received.timestamp() * 1000)
        candidates = {cid: fp for cid, raw in open_cases[customer].items()
                      if (fp := repeats.decode(raw)) is not None}
        match = None
        if candidates:
            match = repeats.find_repeat(candidates, message, category, now, WINDOW_MS, possible=True)
        if outcomes is not None:
            outcomes[record["id"]] = match
        if match is not None and (merge_possible or _confident(match)):
            groups[record["id"]] = groups_key = match.complaint_id
            if refresh_on_merge:
                complaint = cases[groups_key]
                complaint.messages.append(MessageEntry(message_id=message.id, channel=message.channel,
                                                       text=message.text, received_at=received,
                                                       language=message.language))
                open_cases[customer][groups_key] = repeats.fingerprint_of(
                    complaint, int(complaint.created_at.timestamp() * 1000))
            continue
        complaint = complaint_of(message, category, customer)
        cases[record["id"]] = complaint
        open_cases[customer][record["id"]] = repeats.fingerprint_of(complaint, now)
        groups[record["id"]] = record["id"]
    return groups


def pairwise(records: list[dict[str, Any]], groups: dict[str, str]) -> dict[str, Any]:
    """Pairwise precision and recall of ``groups`` against the records' ``dup_group`` labels, and the
    ``not_dup_of`` pairs merged. Only pairs of one customer can be predicted (repeats are looked for
    among the customer's own cases), so pairs across customers count as predicted apart."""
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_customer[str(r.get("customer") or r["id"])].append(r)
    tp = fp = fn = 0
    false_pairs: list[tuple[str, str]] = []
    missed_pairs: list[tuple[str, str]] = []
    for rs in by_customer.values():
        for a, b in combinations(rs, 2):
            same = bool(a.get("dup_group")) and a.get("dup_group") == b.get("dup_group")
            merged = groups.get(a["id"], a["id"]) == groups.get(b["id"], b["id"])
            if same and merged:
                tp += 1
            elif merged:
                fp += 1
                false_pairs.append((a["id"], b["id"]))
            elif same:
                fn += 1
                missed_pairs.append((a["id"], b["id"]))
    by_id = {r["id"]: r for r in records}
    hard = [(r["id"], r["not_dup_of"]) for r in records if r.get("not_dup_of") in by_id]
    hard_merged = [(a, b) for a, b in hard if groups.get(a, a) == groups.get(b, b)]
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"records": len(records), "positive_pairs": tp + fn, "predicted_pairs": tp + fp,
            "true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "precision": round(precision, 3), "recall": round(recall, 3),
            "hard_negatives": len(hard), "hard_negatives_merged": len(hard_merged),
            "false_pairs": false_pairs, "missed_pairs": missed_pairs, "hard_merged_pairs": hard_merged}


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def keyword_category(text: str) -> str:
    from router.categorise import categorise

    return categorise(text).category


def score_file(paths: Iterable[str], categorise: Callable[[str], str] = keyword_category, *,
               merge_possible: bool = False, refresh_on_merge: bool = False) -> dict[str, Any]:
    records = load(paths)
    groups = predicted_groups(records, categorise, merge_possible=merge_possible, refresh_on_merge=refresh_on_merge)
    return pairwise(records, groups)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.understanding.repeat_scoring",
                                     description="pairwise precision / recall of repeat reports on labelled JSONL")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--possible", action="store_true", help="also merge the 'possible repeat' band")
    parser.add_argument("--refresh", action="store_true", help="renew a case's fingerprint with each merge")
    parser.add_argument("--errors", action="store_true", help="list the pairs merged wrongly and the pairs missed")
    args = parser.parse_args(argv)
    records = load(args.files)
    outcomes: dict[str, Any] = {}
    groups = predicted_groups(records, keyword_category, merge_possible=args.possible, refresh_on_merge=args.refresh,
                              outcomes=outcomes)
    result = pairwise(records, groups)
    print(f"{result['records']} records, {result['positive_pairs']} positive pairs: "
          f"precision {result['precision']:.3f}, recall {result['recall']:.3f} "
          f"(tp {result['true_positives']}, fp {result['false_positives']}, fn {result['false_negatives']}); "
          f"hard negatives merged {result['hard_negatives_merged']} of {result['hard_negatives']}")
    if args.errors:
        by_id = {r["id"]: r for r in records}

        def show(rid: str) -> str:
            m = outcomes.get(rid)
            how = f"{m.reason} {m.score}{'' if _confident(m) else ' (possible)'} -> {m.complaint_id}" if m else "-"
            return f"    {rid} [{how}] {by_id[rid]['text'][:150]!r}"

        for title, key in (("merged wrongly", "false_pairs"), ("missed", "missed_pairs")):
            print(f"{title}:")
            for a, b in result[key]:
                print(show(a))
                print(show(b))
                print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
