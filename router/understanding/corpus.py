"""Labelled messages in the shared corpus format (one JSON object a line: ``id``, ``channel``,
``customer``, ``text``, ``category``, ``formal_complaint``, ``dup_group``, ...) and the fixed
held-out split every figure on our own corpus is measured on."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "corpus"
DEFAULT_GLOB = str(DATA_DIR / "train_*.jsonl")
HELDOUT_PERCENT = 15


def data_files(pattern: str = DEFAULT_GLOB) -> list[Path]:
    """The files a glob names, sorted, so the same data always trains in the same order."""
    return sorted(Path(p) for p in glob.glob(pattern))


def load_records(paths: list[Path] | Path) -> list[dict]:
    paths = [paths] if isinstance(paths, Path) else paths
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON: {exc}") from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{number}: a record needs a text")
                records.append(record)
    return records


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_heldout(record: dict, percent: int = HELDOUT_PERCENT) -> bool:
    """The held-out part: whole customers, by a hash of the customer key, so a follow-up never sits
    on the other side of the split from the message it follows, and a new corpus file leaves the
    assignment of the old records unchanged."""
    key = str(record.get("customer") or record.get("id") or record["text"])
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 100
    return bucket < percent


def split(records: list[dict], percent: int = HELDOUT_PERCENT) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)``."""
    train, heldout = [], []
    for record in records:
        (heldout if is_heldout(record, percent) else train).append(record)
    return train, heldout


__all__ = ["DATA_DIR", "DEFAULT_GLOB", "HELDOUT_PERCENT", "data_files", "file_sha256", "is_heldout", "load_records",
           "split"]
