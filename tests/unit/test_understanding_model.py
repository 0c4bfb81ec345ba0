"""The learned categoriser: deterministic versioned training, predictions with a confidence and a
runner-up, the default model trained when none is stored, and the evaluation report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main as cli_main
from router.understanding import artefacts, compact, corpus
from tests.conftest import corpus_subset
from router.understanding.evaluate import evaluate_records, pairwise_scores
from router.understanding.model import CATEGORIES, DEFAULT_PARAMS
from router.understanding.textprep import prepare

ROOT = Path(__file__).resolve().parents[2]




@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory):
    """load_current on an empty models directory: trains the default from data/corpus (once a session)."""
    models = tmp_path_factory.mktemp("models")
    return models, artefacts.load_current(models)


def test_load_current_without_an_artefact_trains_the_default(default_model) -> None:
    models, model = default_model
    assert artefacts.current_version(models) == model.version
    manifest = artefacts.read_manifest(models, model.version)
    assert manifest["version"] == model.version
    assert {Path(f["path"]).name for f in manifest["data_files"]} == {p.name for p in corpus.data_files()}
    assert all(len(f["sha256"]) == 64 for f in manifest["data_files"])
    assert manifest["libraries"]["sklearn"] and manifest["created_at"].endswith("Z")
    assert manifest["heldout"]["heldout_records"] > 0 and 0 < manifest["heldout"]["macro_f1"] <= 1
    # the data and code of now would train this very version
    assert artefacts.model_version(corpus.data_files(), DEFAULT_PARAMS) == model.version

    # the second call loads what the first stored, it does not train again
    stored = models / model.version / artefacts.MODEL_FILE
    before = stored.stat().st_mtime_ns
    again = artefacts.load_current(models)
    assert again.version == model.version and stored.stat().st_mtime_ns == before


def test_a_current_that_names_a_missing_version_trains_again(tmp_path: Path) -> None:
    data = corpus_subset(tmp_path / "train_small.jsonl", per_category=8)
    trained = artefacts.train(str(data), tmp_path / "models")
    (tmp_path / "models" / artefacts.CURRENT_FILE).write_text("0000000000000000\n")
    with pytest.raises(artefacts.ModelError):
        artefacts.load(tmp_path / "models", "0000000000000000")
    assert trained.version != "0000000000000000"


def test_training_is_deterministic_and_the_version_names_data_and_parameters(tmp_path: Path) -> None:
    data = corpus_subset(tmp_path / "train_small.jsonl", per_category=12)
    first = artefacts.train(str(data), tmp_path / "a")
    second = artefacts.train(str(data), tmp_path / "b")
    assert first.version == second.version
    texts = ["我被重复扣款了 ¥128.50", "app keeps crashing after the update", "how much is the withdrawal fee?"]
    assert np.array_equal(first.probabilities(texts), second.probabilities(texts))
    assert first.manifest["heldout"] == second.manifest["heldout"]

    other_params = dict(DEFAULT_PARAMS, svm_C=0.5)
    assert artefacts.model_version([data], other_params) != first.version
    with data.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "x1", "customer": "x", "channel": "sms", "text": "余额多少", "category": "balance_query",
                            "formal_complaint": False}, ensure_ascii=False) + "\n")
    assert artefacts.model_version([data], DEFAULT_PARAMS) != first.version


def test_a_few_messages_per_category_still_train(tmp_path: Path) -> None:
    """Fewer messages in a category than calibration folds: fewer folds, not a failure."""
    data = corpus_subset(tmp_path / "train_tiny.jsonl", per_category=3)
    model = artefacts.train(str(data), tmp_path / "models")
    assert model.predict("余额还有多少").category in CATEGORIES
    with pytest.raises(ValueError, match="at least 3 categories"):
        artefacts.train(str(corpus_subset(tmp_path / "train_one.jsonl", per_category=1)), tmp_path / "models")


def test_prediction_gives_category_confidence_and_runner_up(default_model) -> None:
    _, model = default_model
    cases = {
        "昨天在超市付款 扣了我两次 每次36.5元 麻烦退一笔": "payment_amount",
        "Someone logged into my account from another country and changed my password": "account_security",
        "更新以后app一打开就闪退": "function_fault",
        "why was I charged a $2 withdrawal fee?": "fee_dispute",
    }
    for text, expected in cases.items():
        p = model.predict(text)
        assert p.category == expected, (text, p)
        assert p.category in CATEGORIES and p.runner_up in CATEGORIES and p.runner_up != p.category
        assert 0.0 <= p.runner_up_confidence <= p.confidence <= 1.0
    probabilities = model.probabilities(list(cases) + ["", "🙂"])
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    # the numpy path gives scikit-learn's own numbers
    expected = model.pipeline.predict_proba([prepare(t) for t in list(cases) + ["", "🙂"]])
    assert np.allclose(probabilities, expected, atol=1e-12)


def test_spoken_spacing_and_width_do_not_change_what_the_model_reads() -> None:
    assert prepare("我 要 投 诉 你 们 扣 了 我 两 次") == prepare("我要投诉你们扣了我两次")
    assert prepare("ＡＰＰ闪退") == prepare("app闪退")
    assert prepare("坐席：您好 客户：我的卡被盗刷了") == prepare("您好 我的卡被盗刷了")
    assert prepare("扣了36.50元 交易号T2026111809452213") == prepare("扣了128元 交易号T2025010100000001")
    assert prepare("問題類型：余額查詢\n問題描述：充值沒到賬") == prepare("充值没到账")


def test_evaluate_prints_every_section(default_model, tmp_path: Path) -> None:
    models, _ = default_model
    records = [
        {"id": "e1", "channel": "app", "customer": "c1", "text": "付了一次被扣了两次 36.5元", "category": "payment_amount",
         "formal_complaint": False, "dup_group": "g1"},
        {"id": "e2", "channel": "sms", "customer": "c1", "text": "重复扣款36.5元的事还没处理？", "category": "payment_amount",
         "formal_complaint": False, "dup_group": "g1"},
        {"id": "e3", "channel": "voice_transcript", "customer": "c2",
         "text": "喂 你好 我 要 投 诉 你们 app 一 打开 就 闪退", "category": "function_fault", "formal_complaint": True,
         "dup_group": None},
        {"id": "e4", "channel": "email", "customer": "c3", "text": "Hello, what is my balance?", "category": "balance_query",
         "formal_complaint": False, "dup_group": None},
    ]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["model", "evaluate", str(path), "--models", str(models)]) == 0
    text = out.getvalue()
    for section in ("== categories (4 messages) ==", "macro-F1", "== confusion matrix", "== accuracy per channel ==",
                    "voice_transcript", "== formal complaint flag ==", "== repeat reports (pairwise over all pairs) =="):
        assert section in text, section
    for category in ("payment_amount", "function_fault", "balance_query"):
        assert category in text
    assert "repeat scoring unavailable" in text or "labelled pairs 1" in text


def test_pairwise_scores_count_pairs() -> None:
    records = [{"id": i, "dup_group": g} for i, g in
               [("a", "g1"), ("b", "g1"), ("c", "g1"), ("d", None), ("e", "g2"), ("f", "g2")]]
    # a, b together (1 right pair), c apart, d merged with e (wrong), f alone
    predicted = {"a": "k1", "b": "k1", "c": "k2", "d": "k3", "e": "k3", "f": "k4"}
    scores = pairwise_scores(records, predicted)
    assert scores["true_pairs"] == 4 and scores["predicted_pairs"] == 2 and scores["correct_pairs"] == 1
    assert scores["precision"] == 0.5 and scores["recall"] == 0.25


def test_cli_train_and_list(tmp_path: Path) -> None:
    data = corpus_subset(tmp_path / "train_small.jsonl", per_category=10)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["model", "train", "--data", str(data), "--out", str(tmp_path / "m")]) == 0
    version = artefacts.current_version(tmp_path / "m")
    assert version and f"version {version}" in out.getvalue()
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["model", "list", "--models", str(tmp_path / "m")]) == 0
    assert version in out.getvalue() and "[current]" in out.getvalue()


def test_evaluation_of_the_held_out_split_uses_customers_never_trained_on() -> None:
    records = corpus.load_records(corpus.data_files())
    train, heldout = corpus.split(records)
    assert heldout and not {r["customer"] for r in train} & {r["customer"] for r in heldout}
    assert {r["category"] for r in heldout} == set(CATEGORIES)


def test_importing_the_package_does_not_import_scikit_learn() -> None:
    code = "import sys, router.understanding, router.understanding.formal; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_evaluate_records_rejects_unlabelled_records(default_model) -> None:
    _, model = default_model
    with pytest.raises(ValueError, match="no category"):
        evaluate_records(model, [{"id": "x", "text": "hello"}])


# -- the compact form workers load -------------------------------------------------------------


def test_the_compact_analysers_make_scikit_learns_ngrams(default_model) -> None:
    """Every corpus text (and some awkward ones) cut into the same n-grams as scikit-learn cuts them."""
    _, model = default_model
    texts = [prepare(r["text"]) for r in corpus.load_records(corpus.data_files())]
    texts += ["", " ", "a", "ab", "  double  spaces\n\nand\tlines ", "it's o'clock", "🙂🙂", "x" * 5]
    for vectoriser in model._vectorisers:
        mine, theirs = compact.Analyser.of(vectoriser), vectoriser.build_analyzer()
        for text in texts:
            assert mine(text) == theirs(text), (vectoriser.analyzer, text)


def test_the_compact_form_predicts_what_the_pipeline_does_and_loads_without_scikit_learn(default_model) -> None:
    models, model = default_model
    assert (models / model.version / compact.COMPACT_FILE).is_file()
    small = artefacts.load(models, model.version)
    assert small.pipeline is None and small.version == model.version and small.classes == model.classes
    texts = [r["text"] for r in corpus.load_records(corpus.data_files())][:400] + ["", "🙂"]
    expected = model.pipeline.predict_proba([prepare(t) for t in texts])
    assert np.allclose(small.probabilities(texts), expected, atol=1e-12)
    assert artefacts.load(models, model.version, pipeline=True).pipeline is not None

    # a worker's start-up: the current model loads with numpy alone, nothing unpickled
    code = ("import sys; from pathlib import Path; from router.understanding import artefacts; "
            f"m = artefacts.load_current(Path({str(models)!r})); "
            "print(m.version, 'sklearn' in sys.modules, 'joblib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [model.version, "False", "False"]


def test_a_damaged_compact_form_falls_back_to_the_pipeline(tmp_path: Path) -> None:
    data = corpus_subset(tmp_path / "train_small.jsonl", per_category=8)
    trained = artefacts.train(str(data), tmp_path / "models")
    (tmp_path / "models" / trained.version / compact.COMPACT_FILE).write_bytes(b"not an npz")
    loaded = artefacts.load(tmp_path / "models", trained.version)
    assert loaded.pipeline is not None
    assert loaded.predict("余额还有多少").category == trained.predict("余额还有多少").category
