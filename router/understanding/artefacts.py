"""Trained categoriser artefacts: versioned, reproducible, and found again by "current".

Layout under the models directory (default ``var/models/``, gitignored)::

    <version>/model.joblib     the fitted pipeline
    <version>/manifest.json    version, created_at, data files and their hashes, library versions,
                               parameters, held-out metrics
    CURRENT                    the version the worker loads

The version is a hash of what decides the model: each data file's name and SHA-256, the parameters,
the scikit-learn / numpy / scipy versions and the source of the text folding and the model code.
Training is deterministic (fixed seeds, files in sorted order), so the same inputs give the same
version and the same predictions.

Loading a model file runs code (joblib is pickle): load only files this project wrote, never a
model file received from elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from router.understanding import compact, corpus
from router.understanding.model import DEFAULT_PARAMS, CategoryModel, fit_pipeline

log = logging.getLogger("router.understanding.artefacts")

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
DEFAULT_MODELS_DIR = Path("var") / "models"
_CODE_FILES = ("textprep.py", "model.py", "compact.py")


class ModelError(Exception):
    """No usable model: missing, unreadable, or made by other library versions."""


def library_versions() -> dict[str, str]:
    import numpy
    import scipy
    import sklearn

    return {"sklearn": sklearn.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def code_sha256() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _CODE_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def model_version(files: list[Path], params: dict[str, Any]) -> str:
    """What a training on ``files`` with ``params`` would be called, without training."""
    payload = {
        "data": [{"name": p.name, "sha256": corpus.file_sha256(p)} for p in files],
        "params": params,
        "libraries": library_versions(),
        "code": code_sha256(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _training_lock(models_dir: Path) -> Iterator[None]:
    """One training per models directory at a time (two workers starting on a fresh clone)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def train(data_glob: str = corpus.DEFAULT_GLOB, models_dir: Path = DEFAULT_MODELS_DIR,
          params: dict[str, Any] | None = None, *, make_current: bool = True, files: list[Path] | None = None,
          on_measured: Callable[[CategoryModel, list[dict]], None] | None = None,
          _locked: bool = False) -> CategoryModel:
    """Fit on every file ``data_glob`` names (or on ``files``, when given: the corpus plus the desk's
    corrections live in two directories) and store the artefact under its version.

    Two fits: one on our corpus less the held-out customers (corpus.split), measured on them for the
    manifest; then the artefact itself on all of it. ``on_measured(model, heldout)`` is given the
    first one and the held-out records (the registry compares it with the current version's)."""
    from router.understanding.evaluate import evaluate_records

    params = dict(DEFAULT_PARAMS if params is None else params)
    files = corpus.data_files(data_glob) if files is None else sorted(files, key=lambda p: (p.name, str(p)))
    if not files:
        raise ModelError(f"no training data matches {data_glob}")
    records = corpus.load_records(files)
    version = model_version(files, params)
    started = time.monotonic()
    train_part, heldout = corpus.split(records)
    heldout_metrics: dict[str, Any] = {"percent": corpus.HELDOUT_PERCENT, "train_records": len(train_part),
                                       "heldout_records": len(heldout)}
    counts = Counter(r["category"] for r in train_part)
    if heldout and len(counts) >= 3 and min(counts.values()) >= 2:
        measured = CategoryModel(fit_pipeline(train_part, params))
        heldout_metrics.update(evaluate_records(measured, heldout, repeats=False).summary())
        if on_measured is not None:
            on_measured(measured, heldout)
    pipeline = fit_pipeline(records, params)
    seconds = round(time.monotonic() - started, 2)

    manifest = {
        "version": version,
        "created_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_files": [{"path": _display_path(p), "sha256": corpus.file_sha256(p),
                        "records": sum(1 for line in p.open(encoding="utf-8") if line.strip())} for p in files],
        "records": len(records),
        "params": params,
        "libraries": library_versions(),
        "code_sha256": code_sha256(),
        "heldout": heldout_metrics,
        "final_model": "trained on all records (the held-out figures are of the same recipe without the held-out part)",
        "training_seconds": seconds,
    }
    with contextlib.nullcontext() if _locked else _training_lock(models_dir):
        _store(models_dir, version, pipeline, manifest, make_current)
    return CategoryModel(pipeline, version, manifest)


def _store(models_dir: Path, version: str, pipeline: Any, manifest: dict[str, Any], make_current: bool) -> None:
    import joblib

    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / version
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{version}."))
    try:
        joblib.dump(pipeline, staging / MODEL_FILE, compress=3)
        manifest["model_bytes"] = (staging / MODEL_FILE).stat().st_size
        try:  # the form workers load: numpy only, nothing unpickled (router/understanding/compact.py)
            compact.save(staging / compact.COMPACT_FILE, CategoryModel(pipeline, version).compact_arrays())
            manifest["compact_bytes"] = (staging / compact.COMPACT_FILE).stat().st_size
        except compact.NotCompactable as exc:
            log.info("model %s has no compact form (%s); workers load its pipeline", version, exc)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if make_current:
        _write_atomic(models_dir / CURRENT_FILE, version + "\n")


def read_manifest(models_dir: Path, version: str) -> dict[str, Any]:
    try:
        return json.loads((models_dir / version / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{models_dir / version}: no readable manifest ({exc})") from None


def current_version(models_dir: Path) -> str | None:
    try:
        value = (models_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value or None


def load(models_dir: Path, version: str, *, pipeline: bool = False) -> CategoryModel:
    """One stored version: its compact form when it has one (numpy arrays: no scikit-learn import,
    nothing unpickled), else the pickled pipeline. ``pipeline``: the fitted pipeline is needed
    (evaluation, retraining): runs the pickled code in it, only for artefacts this project made."""
    manifest = read_manifest(models_dir, version)
    if manifest.get("version") != version:
        raise ModelError(f"{models_dir / version}: manifest names version {manifest.get('version')}")
    compact_path = models_dir / version / compact.COMPACT_FILE
    if not pipeline and compact_path.is_file():
        try:
            return CategoryModel.from_compact(compact.load(compact_path), version, manifest)
        except (OSError, ValueError, KeyError) as exc:  # truncated or foreign: the pipeline may still load
            log.warning("%s: compact form unusable (%s); loading the pipeline", compact_path, type(exc).__name__)
    import joblib

    made_with = manifest.get("libraries", {}).get("sklearn")
    now = library_versions()["sklearn"]
    if made_with != now:
        raise ModelError(f"{models_dir / version}: made with scikit-learn {made_with}, this is {now}; train again")
    try:
        pipeline = joblib.load(models_dir / version / MODEL_FILE)
    except Exception as exc:  # a truncated or foreign file: any unpickling error means "not usable"
        raise ModelError(f"{models_dir / version}: cannot load the model ({type(exc).__name__}: {exc})") from None
    return CategoryModel(pipeline, version, manifest)


def train_default(models_dir: Path = DEFAULT_MODELS_DIR, *, _locked: bool = False) -> CategoryModel:
    """Train from data/corpus/train_*.jsonl with the default parameters and make it current."""
    return train(corpus.DEFAULT_GLOB, models_dir, DEFAULT_PARAMS, _locked=_locked)


def load_current(models_dir: Path = DEFAULT_MODELS_DIR) -> CategoryModel:
    """The version CURRENT names; when there is none, or it cannot be used (deleted, made by other
    library versions), the default training - so a fresh clone works without a committed binary."""
    version = current_version(models_dir)
    if version is not None:
        try:
            return load(models_dir, version)
        except ModelError:
            pass
    with _training_lock(models_dir):
        # another process may have trained it while we waited for the lock
        version = current_version(models_dir)
        if version is not None:
            with contextlib.suppress(ModelError):
                return load(models_dir, version)
        return train_default(models_dir, _locked=True)


def list_versions(models_dir: Path) -> list[dict[str, Any]]:
    """Stored versions, newest first, each its manifest plus ``current``."""
    current = current_version(models_dir)
    rows = []
    if models_dir.is_dir():
        for child in models_dir.iterdir():
            if child.name.startswith(".") or not (child / MANIFEST_FILE).exists():
                continue
            try:
                manifest = read_manifest(models_dir, child.name)
            except ModelError:
                continue
            manifest["current"] = child.name == current
            rows.append(manifest)
    rows.sort(key=lambda m: m.get("created_at", ""), reverse=True)
    return rows


__all__ = ["CURRENT_FILE", "DEFAULT_MODELS_DIR", "MANIFEST_FILE", "MODEL_FILE", "ModelError", "code_sha256", "current_version",
           "library_versions", "list_versions", "load", "load_current", "model_version", "read_manifest", "train",
           "train_default"]
