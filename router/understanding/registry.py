"""The categoriser's versions, kept like the routing rules (router/rulestore.py): Redis holds the
promoted version, every version trained (its held-out figures and its evaluation against the
version current when it was trained), and the history of promotions and rollbacks (who, when,
why). A worker anywhere loads a promoted version it did not train: the artefact's bytes are in
Redis (the newest :data:`KEEP_ARTEFACTS`, plus the current one and the one a rollback returns to)
and are cached on disk under ``<models_dir>/<version>/``.

- :meth:`ModelRegistry.train_candidate` trains on the corpus plus the desk's corrections
  (router/understanding/corrections.py) and compares the new version with the current one on the
  same held-out data: the corpus's held-out customers plus the corrections of held-out customers
  (the same stable hash, corpus.is_heldout). Both sides are the recipe fitted without the
  held-out part - the candidate's as its training measured it, the current's refitted on its own
  training files (found again by their SHA-256) - so neither has seen what it is scored on.
- :meth:`ModelRegistry.dry_run` - what a version would do to recent complaints.
- :meth:`ModelRegistry.promote` / :meth:`ModelRegistry.rollback` - with a reason, recorded.
- ``router.understanding.model_cache.ModelCache`` - the worker's current model, re-checked at most every ``CHECK_EVERY_S``.

When Redis names no version, the current model is :func:`artefacts.load_current` (the default
trained from data/corpus, the same on every machine); a rollback past the first promotion returns
to it. Loading a model file runs code (joblib is pickle): only artefacts this desk trained and
stored in its own Redis are loaded, and their SHA-256 is checked first.

Keys: :class:`router.understanding.corrections.ModelKeys`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import msgspec
from redis.exceptions import RedisError, WatchError

from normalizer.pii import mask_pii
from router.understanding import corpus
from router.understanding.compact import COMPACT_FILE
from router.understanding.corrections import ModelKeys, all_corrections, labelled_records, write_records

if TYPE_CHECKING:  # numpy and scikit-learn load on first use, not with the gateway
    from router.store.keys import Keys
    from router.understanding.model import CategoryModel

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25
KEEP_ARTEFACTS = 5
DRY_RUN_EXAMPLES = 5
ROLLBACK_DEPTH = 20
HISTORY_MAX = 1000
RETRY_FAILED_S = 30.0
TRAINING_LOCK_S = 900
CORRECTIONS_DIR = "corrections"
_VERSION = re.compile(r"^[0-9a-f]{16}$")
_DEFAULT_MODELS_DIR = Path("var") / "models"  # artefacts.DEFAULT_MODELS_DIR, without importing numpy


class RegistryError(Exception):
    status = 409
    code = "model_conflict"


class UnknownVersion(RegistryError):
    status = 404
    code = "version_not_found"


class ArtefactGone(RegistryError):
    code = "artefact_pruned"


class AlreadyCurrent(RegistryError):
    code = "already_current"


class NothingToRollBack(RegistryError):
    code = "nothing_to_roll_back"


class TrainingBusy(RegistryError):
    code = "training_in_progress"


class Recent(msgspec.Struct, frozen=True):
    """A recent complaint for a dry run: its id, the text the worker categorised, its category now."""

    id: str
    text: str
    category: str
    case_number: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a reason is required")
    return mask_pii(reason[:1000])


def check_version_name(version: str) -> str:
    """A version is 16 hex digits (artefacts.model_version); anything else names no version (and
    never a path)."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise UnknownVersion(f"{version!r} is not a model version")
    return version


def _as_recent(item: Any) -> Recent:
    if isinstance(item, Recent):
        return item
    if isinstance(item, dict):
        return Recent(str(item["id"]), item.get("text") or "", item.get("category") or "", item.get("case_number"))
    cid, text, category = item[:3]
    return Recent(str(cid), text or "", category or "")


def _f(value: Any) -> float | None:
    return round(value, 4) if isinstance(value, float) else value


class ModelRegistry:
    """The categoriser's versions of one desk (its key prefix)."""

    def __init__(self, redis: Any, prefix: "Keys | str", models_dir: Path | None = None, *, keep: int = KEEP_ARTEFACTS) -> None:
        self.r = redis
        self.prefix = prefix
        self.keys = ModelKeys(prefix)
        self.models_dir = Path(models_dir) if models_dir is not None else _DEFAULT_MODELS_DIR
        self.keep = max(2, keep)

    # -- reading -----------------------------------------------------------------------------

    async def current_version(self) -> str | None:
        value = await self.r.get(self.keys.current)
        return value.decode() if value else None

    async def version_info(self, version: str) -> dict[str, Any] | None:
        raw = await self.r.hget(self.keys.versions, version)
        return json.loads(raw) if raw else None

    async def versions(self) -> list[dict[str, Any]]:
        """Every version trained, newest first, with ``current`` and ``stored`` (its bytes are in Redis)."""
        raw = await self.r.hgetall(self.keys.versions)
        stored = {m.decode() for m in await self.r.zrange(self.keys.artefacts, 0, -1)}
        current = await self.current_version()
        rows = []
        for data in raw.values():
            info = json.loads(data)
            info["current"] = info["version"] == current
            info["stored"] = info["version"] in stored
            rows.append(info)
        rows.sort(key=lambda i: (i.get("trained_at", ""), i["version"]), reverse=True)
        return rows

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """Promotions and rollbacks, newest first."""
        return [json.loads(e) for e in reversed(await self.r.lrange(self.keys.history, -limit, -1))]

    async def rollback_target(self) -> str | None:
        """What a rollback would return to: a version, ``""`` for the default, None for nothing."""
        top = await self.r.lindex(self.keys.previous, -1)
        return None if top is None else top.decode()

    def _local_default(self) -> dict[str, Any]:
        from router.understanding import artefacts

        version = artefacts.current_version(self.models_dir)
        view: dict[str, Any] = {"version": version, "promoted": False}
        if version:
            try:
                manifest = artefacts.read_manifest(self.models_dir, version)
            except artefacts.ModelError:
                return view
            view.update(created_at=manifest.get("created_at"), records=manifest.get("records"),
                        heldout=_heldout_view(manifest.get("heldout", {})))
        return view

    async def overview(self, *, history: int = 50) -> dict[str, Any]:
        """The current version and its figures, every version, the history, the rollback target."""
        current = await self.current_version()
        versions = await self.versions()
        if current is None:
            shown = await asyncio.to_thread(self._local_default)
            shown["note"] = "no version promoted: the default trained from data/corpus"
        else:
            info = next((v for v in versions if v["version"] == current), None) or {"version": current}
            shown = {**info, "promoted": True}
        target = await self.rollback_target()
        return {"current": shown, "versions": versions, "history": await self.history(history),
                "rollback_to": None if target is None else (target or "default")}

    # -- artefacts ---------------------------------------------------------------------------

    def _local_ok(self, version: str) -> bool:
        from router.understanding.artefacts import MANIFEST_FILE, MODEL_FILE

        folder = self.models_dir / version
        return (folder / MANIFEST_FILE).is_file() and (folder / MODEL_FILE).is_file()

    async def ensure_local(self, version: str) -> Path:
        """The version's folder under models_dir, written from Redis when this machine lacks it."""
        check_version_name(version)
        if await asyncio.to_thread(self._local_ok, version):
            return self.models_dir / version
        model, manifest, sha, name, corrections, small, small_sha = await self.r.hmget(
            self.keys.artefact(version), "model", "manifest", "sha256", "corrections_name", "corrections",
            "compact", "compact_sha256")
        if not model or not manifest:
            if await self.r.hexists(self.keys.versions, version):
                raise ArtefactGone(f"version {version}'s artefact is no longer stored (only the newest {self.keep} are)")
            raise UnknownVersion(f"no version {version}")
        if sha is None or hashlib.sha256(model).hexdigest() != sha.decode():
            raise ArtefactGone(f"version {version}'s stored artefact does not match its SHA-256")
        if small is not None and (small_sha is None or hashlib.sha256(small).hexdigest() != small_sha.decode()):
            small = None  # a damaged compact form: the pipeline still loads
        await asyncio.to_thread(self._write_local, version, model, manifest,
                                name.decode() if name else None, corrections, small)
        return self.models_dir / version

    def _write_local(self, version: str, model: bytes, manifest: bytes, corrections_name: str | None,
                     corrections: bytes | None, small: bytes | None = None) -> None:
        from router.understanding.artefacts import MANIFEST_FILE, MODEL_FILE

        self.models_dir.mkdir(parents=True, exist_ok=True)
        if corrections_name and corrections is not None and re.match(r"^[\w.-]+$", corrections_name):
            folder = self.models_dir / CORRECTIONS_DIR
            folder.mkdir(exist_ok=True)
            if not (folder / corrections_name).exists():
                _write_bytes_atomic(folder / corrections_name, corrections)
        staging = Path(tempfile.mkdtemp(dir=self.models_dir, prefix=f".{version}."))
        try:
            (staging / MODEL_FILE).write_bytes(model)
            (staging / MANIFEST_FILE).write_bytes(manifest)
            if small is not None:
                (staging / COMPACT_FILE).write_bytes(small)
            try:
                os.replace(staging, self.models_dir / version)
            except OSError:
                if not self._local_ok(version):  # not another process writing the same version first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def load(self, version: str) -> CategoryModel:
        """A stored version, from the disk cache or Redis (loading runs in a thread)."""
        from router.understanding import artefacts

        await self.ensure_local(version)
        return await asyncio.to_thread(artefacts.load, self.models_dir, version)

    async def _publish(self, version: str, info: dict[str, Any], corrections_path: Path | None) -> None:
        from router.understanding.artefacts import MANIFEST_FILE, MODEL_FILE

        folder = self.models_dir / version
        model = await asyncio.to_thread((folder / MODEL_FILE).read_bytes)
        manifest = await asyncio.to_thread((folder / MANIFEST_FILE).read_bytes)
        info["sha256"] = hashlib.sha256(model).hexdigest()
        fields: dict[str, bytes | str] = {"model": model, "manifest": manifest, "sha256": info["sha256"]}
        if (folder / COMPACT_FILE).is_file():  # what workers load (numpy only); the pipeline stays the truth
            small = await asyncio.to_thread((folder / COMPACT_FILE).read_bytes)
            fields.update({"compact": small, "compact_sha256": hashlib.sha256(small).hexdigest()})
        if corrections_path is not None:
            fields["corrections_name"] = corrections_path.name
            fields["corrections"] = await asyncio.to_thread(corrections_path.read_bytes)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.artefact(version))
            pipe.hset(self.keys.artefact(version), mapping=fields)
            pipe.hset(self.keys.versions, version, json.dumps(info, ensure_ascii=False))
            pipe.zadd(self.keys.artefacts, {version: time.time_ns() // 1_000_000})
            await pipe.execute()
        await self.prune()

    async def prune(self) -> list[str]:
        """Drop the oldest artefacts beyond ``keep``, never the current one, the one a rollback
        returns to, nor the newest; their figures stay in ``versions``. Answers what was dropped."""
        k = self.keys
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k.current, k.previous, k.artefacts)
                    members = [m.decode() for m in await pipe.zrange(k.artefacts, 0, -1)]
                    if len(members) <= self.keep:
                        return []
                    protected = {m.decode() for m in (await pipe.get(k.current), await pipe.lindex(k.previous, -1)) if m}
                    protected.add(members[-1])
                    drop = [m for m in members if m not in protected][:len(members) - self.keep]
                    pipe.multi()
                    for m in drop:
                        pipe.delete(k.artefact(m))
                        pipe.zrem(k.artefacts, m)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        await asyncio.to_thread(self._drop_local, drop)
        return drop

    def _drop_local(self, versions: Iterable[str]) -> None:
        from router.understanding import artefacts

        keep = artefacts.current_version(self.models_dir)
        for version in versions:
            if version != keep and _VERSION.match(version):
                shutil.rmtree(self.models_dir / version, ignore_errors=True)

    # -- training ----------------------------------------------------------------------------

    async def train_candidate(self, *, data_glob: str = corpus.DEFAULT_GLOB, params: dict[str, Any] | None = None,
                              by: str = "system") -> dict[str, Any]:
        """Train on the corpus plus the desk's corrections, store the new version (not promoted) and
        answer its figures with its evaluation against the current version. One training per desk at
        a time (:class:`TrainingBusy`); the fitting runs in a thread."""
        token = secrets.token_hex(8)
        if not await self.r.set(self.keys.training, token, nx=True, ex=TRAINING_LOCK_S):
            raise TrainingBusy("a candidate is being trained; try again when it is done")
        try:
            labelled = labelled_records(await all_corrections(self.r, self.prefix))
            current = await self.current_version()
            if current is not None:
                await self.ensure_local(current)
            outcome = await asyncio.to_thread(self._train_sync, data_glob, params, labelled, current)
            info, corrections_path = outcome
            info["trained_by"] = by
            await self._publish(info["version"], info, corrections_path)
            return info
        finally:
            async with self.r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.keys.training)
                    if await pipe.get(self.keys.training) == token.encode():
                        pipe.multi()
                        pipe.delete(self.keys.training)
                        await pipe.execute()
                except (WatchError, RedisError):
                    pass  # it expires

    def _train_sync(self, data_glob: str, params: dict[str, Any] | None, labelled: list[dict[str, Any]],
                    current: str | None) -> tuple[dict[str, Any], Path | None]:
        from router.understanding import artefacts

        files = corpus.data_files(data_glob)
        if not files:
            raise artefacts.ModelError(f"no training data matches {data_glob}")
        corrections_dir = self.models_dir / CORRECTIONS_DIR
        corrections_path = write_records(labelled, corrections_dir) if labelled else None
        measured: dict[str, Any] = {}

        def keep(model: Any, heldout: list[dict]) -> None:
            measured["model"], measured["heldout"] = model, heldout

        candidate = artefacts.train(data_glob, self.models_dir, params, make_current=False,
                                    files=files + ([corrections_path] if corrections_path else []),
                                    on_measured=keep)
        m = candidate.manifest
        heldout_corrections = sum(1 for r in labelled if corpus.is_heldout(r))
        info: dict[str, Any] = {
            "version": candidate.version, "trained_at": _now(), "records": m["records"],
            "corrections": len(labelled), "corrections_heldout": heldout_corrections,
            "data_files": [{"name": Path(f["path"]).name, "sha256": f["sha256"], "records": f.get("records")}
                           for f in m["data_files"]],
            "params": m["params"], "libraries": m["libraries"], "model_bytes": m.get("model_bytes"),
            "training_seconds": m.get("training_seconds"), "heldout": _heldout_view(m["heldout"]),
            "current_version": current,
        }
        if "model" not in measured:
            info["evaluation"] = {"measured": False, "why": "too little data to hold any part out"}
            return info, corrections_path
        current_model = (artefacts.load(self.models_dir, current) if current is not None
                         else artefacts.load_current(self.models_dir))
        info["current_version"] = current_model.version
        if current_model.version == candidate.version:
            baseline, how = measured["model"], "the same data and recipe as the candidate"
        else:
            baseline, how = self._refit(current_model)
        info["evaluation"] = compare(measured["model"], baseline, measured["heldout"], current_model.version, how)
        return info, corrections_path

    def _refit(self, current: CategoryModel) -> tuple[CategoryModel, str]:
        """The current version's recipe fitted on its own training files less the held-out customers;
        when its files are not all here any more, its final model (which saw the held-out part)."""
        from router.understanding.model import DEFAULT_PARAMS, CategoryModel, fit_pipeline

        paths = []
        for entry in current.manifest.get("data_files", []):
            name = Path(entry["path"]).name
            for place in (Path(entry["path"]), corpus.DATA_DIR / name, self.models_dir / CORRECTIONS_DIR / name):
                if place.is_file() and corpus.file_sha256(place) == entry["sha256"]:
                    paths.append(place)
                    break
            else:
                return current, f"its final model: its training file {name} is not here any more, so it has seen the held-out part"
        train_part, _ = corpus.split(corpus.load_records(paths))
        try:
            return (CategoryModel(fit_pipeline(train_part, current.manifest.get("params") or DEFAULT_PARAMS)),
                    "its recipe refitted on its training files without the held-out part")
        except ValueError as exc:
            return current, f"its final model ({exc})"

    # -- dry run, promote, rollback -----------------------------------------------------------

    async def dry_run(self, version: str, recent: Iterable[Any], *, examples: int = DRY_RUN_EXAMPLES) -> dict[str, Any]:
        """What ``version`` would categorise recent complaints as, changing nothing: how many would
        change, counts from -> to, up to ``examples`` examples each (text masked and cut)."""
        model = await self.load(check_version_name(version))
        items = [_as_recent(x) for x in recent]
        predictions = await asyncio.to_thread(model.predict_many, [i.text for i in items]) if items else []
        moves: Counter[tuple[str, str]] = Counter()
        shown: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        for item, p in zip(items, predictions):
            before[item.category] += 1
            after[p.category] += 1
            if p.category == item.category:
                continue
            move = (item.category, p.category)
            moves[move] += 1
            if len(shown[move]) < examples:
                text = mask_pii(item.text)
                shown[move].append({"id": item.id, "case_number": item.case_number,
                                    "text": text if len(text) <= 280 else text[:279] + "…",
                                    "confidence": p.confidence, "runner_up": p.runner_up})
        changed = sum(moves.values())
        return {
            "version": version, "current_version": await self.current_version(), "examined": len(items),
            "would_change": changed, "unchanged": len(items) - changed,
            "changes": [{"from": a, "to": b, "count": n, "examples": shown[(a, b)]} for (a, b), n in moves.most_common()],
            "by_category": {c: {"now": before.get(c, 0), "would_be": after.get(c, 0)}
                            for c in sorted(set(before) | set(after))},
        }

    async def promote(self, version: str, *, by: str, reason: str) -> dict[str, Any]:
        """Make a trained version current (workers follow within ``CHECK_EVERY_S``)."""
        reason = _reason(reason)
        check_version_name(version)
        if not await self.r.hexists(self.keys.versions, version):
            raise UnknownVersion(f"no version {version}")
        await self.load(version)  # whole, and made with this scikit-learn: before anyone depends on it
        return await self._switch(version, by=by, reason=reason, action="promoted")

    async def rollback(self, *, by: str, reason: str) -> dict[str, Any]:
        """Back to the version current before the last promotion (the default when there was none)."""
        reason = _reason(reason)
        target = await self.rollback_target()
        if target is None:
            raise NothingToRollBack("no promotion to roll back")
        if target:
            await self.load(target)
        return await self._switch(target or None, by=by, reason=reason, action="rolled_back", expected_target=target)

    async def _switch(self, version: str | None, *, by: str, reason: str, action: str,
                      expected_target: str | None = None) -> dict[str, Any]:
        k = self.keys
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k.current, k.previous, k.artefacts)
                    raw = await pipe.get(k.current)
                    current = raw.decode() if raw else None
                    if action == "promoted":
                        if current == version:
                            raise AlreadyCurrent(f"version {version} is already current")
                    else:
                        top = await pipe.lindex(k.previous, -1)
                        if top is None or top.decode() != expected_target:
                            raise RegistryError("someone else rolled back or promoted meanwhile; look again")
                    if version is not None and await pipe.zscore(k.artefacts, version) is None:
                        raise ArtefactGone(f"version {version}'s artefact is no longer stored")
                    entry = {"action": action, "version": version, "previous": current, "by": by, "at": _now(),
                             "reason": reason}
                    pipe.multi()
                    if version is None:
                        pipe.delete(k.current)
                    else:
                        pipe.set(k.current, version)
                    if action == "promoted":
                        pipe.rpush(k.previous, current or "")
                        pipe.ltrim(k.previous, -ROLLBACK_DEPTH, -1)
                    else:
                        pipe.rpop(k.previous)
                    pipe.rpush(k.history, json.dumps(entry, ensure_ascii=False))
                    pipe.ltrim(k.history, -HISTORY_MAX, -1)
                    await pipe.execute()
                    return entry
                except WatchError:
                    continue


def _heldout_view(heldout: dict[str, Any]) -> dict[str, Any]:
    keep = ("percent", "train_records", "heldout_records", "macro_f1", "accuracy")
    view = {k: heldout[k] for k in keep if k in heldout}
    if "per_category" in heldout:
        view["f1"] = {c: row.get("f1") for c, row in heldout["per_category"].items()}
    return view


def compare(candidate: Any, current: Any, heldout: list[dict], current_version: str, how: str) -> dict[str, Any]:
    """Both models on the same held-out records: macro-F1s, accuracies, per-category F1 deltas, and
    how each does on the held-out desk corrections."""
    from router.understanding.evaluate import evaluate_records

    new = evaluate_records(candidate, heldout, repeats=False)
    old = evaluate_records(current, heldout, repeats=False)
    new_rows, old_rows = new.per_category(), old.per_category()
    per_category = {}
    for label in list(dict.fromkeys([*new.labels, *old.labels])):
        a, b = new_rows.get(label, {}), old_rows.get(label, {})
        fa, fb = a.get("f1"), b.get("f1")
        per_category[label] = {"candidate_f1": _f(fa), "current_f1": _f(fb),
                               "delta": _f((fa or 0.0) - (fb or 0.0)),
                               "support": a.get("support", b.get("support", 0))}
    desk = [i for i, r in enumerate(heldout) if r.get("source") == "desk_correction"]

    def on_desk(evaluation: Any) -> float | None:
        if not desk:
            return None
        good = sum(1 for i in desk if evaluation.predictions[i].category == heldout[i]["category"])
        return round(good / len(desk), 4)

    return {
        "measured": True, "heldout_records": len(heldout), "heldout_corrections": len(desk),
        "candidate": {"macro_f1": round(new.macro_f1(), 4), "accuracy": round(new.accuracy(), 4),
                      "corrections_accuracy": on_desk(new)},
        "current": {"version": current_version, "macro_f1": round(old.macro_f1(), 4),
                    "accuracy": round(old.accuracy(), 4), "corrections_accuracy": on_desk(old), "measured_as": how},
        "macro_f1_delta": round(new.macro_f1() - old.macro_f1(), 4),
        "per_category": per_category,
    }


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


__all__ = ["AlreadyCurrent", "ArtefactGone", "CHECK_EVERY_S", "KEEP_ARTEFACTS", "ModelRegistry",
           "NothingToRollBack", "Recent", "RegistryError", "TrainingBusy", "UnknownVersion", "check_version_name",
           "compare"]
