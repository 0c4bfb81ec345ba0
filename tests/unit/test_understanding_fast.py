"""The faster readers of a message's words answer what the plain ones did (issue 21), on every text
of our corpus (data/corpus) and of shared/corpus/dev.jsonl when it is there: the categoriser's
n-gram counts and probabilities, the text it reads, the patterns behind first-character guards
and the prechecks that skip them, the PII search's memo of recent texts, and the incident check's
tokens."""

from __future__ import annotations

import functools
import json
import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from normalizer import extract, pii
from normalizer.mail import _cut_quoted, strip_quoted
from normalizer.text import first_char_guard, guarded_alternation, literal_trie
from router import incidents, repeat_signals, repeats
from router.understanding import artefacts, compact, formal, textprep
from router.understanding import model as model_module
from tests.conftest import TEST_MODELS_DIR

ROOT = Path(__file__).resolve().parents[2]
SHARED_DEV = ROOT.parent / "shared" / "corpus" / "dev.jsonl"
AWKWARD = ["", " ", "a", "ab", "  double  spaces\n\nand\tlines ", "it's o'clock", "🙂🙂", "x" * 5, "12315",
           "Refund 还没到账, order 4200001234202611081234567890, 金额 ¥256", "ıstanbul ISTANBUL İstanbul",
           "13800138000@qq.com 或 13800138000", "call +1 (212) 555-0100 or mail a.b@example.com", "HK$1,000 退 58.8",
           "我 要 投 诉 12315", "坐席：您好 客户：还没到账", "١٢٣ dollars", "ＲＭＢ１２８．５０",
           "張生喺度 俾人碌咗卡 唔係我", "帳戶餘額", "AGENT : hi\r\nCaller：退款", "one line\rafter a lone CR  ",
           "-----Original Message-----", "  Sent from my iPhone  ", "> quoted only", "--", "see https://x.example/a b",
           "T2026111809452213 and t20261118 and ıd-7 and SG-PAY-7710293 and #TZ-44821", "Tı12345678"]


def _texts() -> list[str]:
    paths = sorted((ROOT / "data" / "corpus").glob("*.jsonl")) + ([SHARED_DEV] if SHARED_DEV.is_file() else [])
    texts = [json.loads(line)["text"] for path in paths for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    assert len(texts) >= 2000
    return texts + AWKWARD


TEXTS = _texts()


@pytest.fixture(scope="module")
def model():
    return artefacts.load_current(TEST_MODELS_DIR)  # the compact form, as a worker loads it


# -- the categoriser -------------------------------------------------------------------------------


def _plain_counts(fast, text: str) -> dict[int, int]:
    """The n-gram counting as it was: every gram of the analyser, one dictionary step each (indices
    in the model's whole feature space)."""
    counts: dict[int, int] = {}
    for gram in fast.analyse(text):
        index = fast.vocabulary.get(gram)
        if index is not None:
            counts[index + fast.offset] = counts.get(index + fast.offset, 0) + 1
    return counts


def _plain_features(fast, text: str) -> tuple[list[int], np.ndarray]:
    """The plain counts' features: sublinear tf x idf, L2-normalised."""
    counts = {index - fast.offset: n for index, n in _plain_counts(fast, text).items()}
    if not counts:
        return [], np.zeros(0)
    indices = list(counts)
    values = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * fast.idf[indices]
    values /= np.sqrt(values @ values)
    return [i + fast.offset for i in indices], values


def _plain_fold(text: str) -> str:
    """``textprep.fold`` as it was: both tables on every text, the speaker labels looked for in every text."""
    text = unicodedata.normalize("NFKC", text).lower().translate(textprep._TRADITIONAL).translate(textprep._CANTONESE)
    return textprep._CJK_GAP.sub("", textprep._SPEAKER.sub(" ", text))


def _plain_rules_text(text: str) -> str:
    """What the formal rules read, as it was made: every text's lines cut as a mail's, folded the plain way."""
    return textprep.without_form_fields(_plain_fold(_cut_quoted(text)))


def _plain_prepare(text: str) -> str:
    folded = _plain_rules_text(text)
    for pattern, replacement in ((textprep._EMAIL, " zmail "), (textprep._URL, " zurl "), (textprep._ALNUM_ID, " zid "),
                                 (textprep._NUMBER, "0"), (textprep._ZH_NUMBER, textprep._zh_number)):
        folded = pattern.sub(replacement, folded)
    return textprep._SPACES.sub(" ", folded).strip()


def test_the_categoriser_reads_the_same_text_and_counts_the_same_ngrams(model) -> None:
    for text in TEXTS:
        prepared = textprep.prepare(text)
        assert prepared == _plain_prepare(text), text
        assert textprep.prepare_for_rules(text) == _plain_rules_text(text), text
        assert strip_quoted(text) == _cut_quoted(text), text
        assert textprep.fold(text) == _plain_fold(text), text
        for fast in model._fast:
            assert isinstance(fast.analyse, compact.Analyser)
            counts = fast.counts(prepared, placed=True)
            plain_indices, _ = _plain_features(fast, prepared)
            assert list(counts) == plain_indices, text  # the same n-grams, in the order they first appear
            assert counts == _plain_counts(fast, prepared), text


def test_character_ngrams_counted_with_numpy_are_the_dictionary_counts(model) -> None:
    chars = next(fast for fast in model._fast if fast.analyse.kind == "char")
    assert chars.char_codes is not None  # the worker's model counts its character n-grams this way
    for text in TEXTS:
        prepared = textprep.prepare(text)
        indices, counts = chars.char_codes.counts(prepared)
        expected = chars.analyse.counts(prepared, chars.placed)
        assert dict(zip(indices.tolist(), counts.tolist())) == dict(expected), text
        assert indices.tolist() == sorted(expected), text


@pytest.mark.parametrize("low,high", [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)])
def test_character_codes_of_every_length_and_awkward_code_points(low: int, high: int) -> None:
    """N-grams of each length in the range, never one of another length; NUL, the last code point,
    a lone surrogate, runs of white space, texts shorter than an n-gram."""
    analyser = compact.Analyser("char", low, high)
    alphabet = ["a", "b", "\x00", "\U0010ffff", "\ud800", " ", "投"]
    vocabulary = {}
    for first in alphabet:
        for gram in (first, first + "a", "a" + first, first + first + "b", "\x00\x00", "\x00\x00\x00"):
            if low <= len(gram) <= high:
                vocabulary.setdefault(gram, len(vocabulary) + 7)
    codes = compact.CharCodes(analyser, vocabulary)
    for text in ["", "a", "ab", "aab", "\x00", "\x00\x00\x00a", "a\U0010ffff\U0010ffffb", "\ud800\ud800b",
                 "a  \n\t a", "投投b投", "ba" * 40]:
        indices, counts = codes.counts(text)
        assert dict(zip(indices.tolist(), counts.tolist())) == dict(analyser.counts(text, vocabulary)), repr(text)


def test_character_codes_refuse_what_they_cannot_tell_apart() -> None:
    assert not compact.CharCodes.covers(compact.Analyser("char", 1, 4))
    assert not compact.CharCodes.covers(compact.Analyser("word", 1, 2, r"[a-z]+"))
    with pytest.raises(compact.NotCompactable):
        compact.CharCodes(compact.Analyser("char", 2, 5), {"ab": 0})
    for term in ("\x00\x00\x00a", ""):  # longer than three characters, its code would wrap onto another's
        with pytest.raises(compact.NotCompactable):
            compact.CharCodes(compact.Analyser("char", 1, 3), {"a": 0, term: 1})


def test_every_prediction_is_what_the_plain_path_gives(model) -> None:
    """Category, confidence, runner-up and the formal flag of every text, against the probabilities
    computed from the plain n-gram counts (to float tolerance) and the formal rules on the plain text."""
    n_classes = len(model.classes)
    for text in TEXTS:
        decision = model._intercepts.copy()
        for fast in model._fast:
            indices, values = _plain_features(fast, _plain_prepare(text))
            if indices:
                decision += values @ model._weights[indices]
        proba = (1.0 / (1.0 + np.exp(decision * model._a + model._b))).reshape(model._n_folds, n_classes)
        norm = proba.sum(axis=1, keepdims=True)
        expected = np.divide(proba, norm, out=np.full_like(proba, 1.0 / n_classes), where=norm != 0).mean(axis=0)
        assert np.allclose(model.probabilities([text])[0], expected, rtol=0, atol=1e-12), text
        p = model.predict(text)
        best, second = np.argsort(-expected, kind="stable")[:2]
        assert (p.category, p.runner_up) == (model.classes[best], model.classes[second]), text
        assert abs(p.confidence - round(float(expected[best]), 4)) < 1e-9, text


def test_texts_read_together_get_what_each_gets_alone(model) -> None:
    """A batch (the predictions one turn of a worker's loop asks for) gives each text the n-gram
    counts and the prediction it gets alone, whatever sits beside it: no n-gram across two texts'
    boundary, empty texts, and more texts than one arithmetic batch holds."""
    codes = compact.CharCodes(compact.Analyser("char", 1, 3), {"a": 0, "b": 1, "ab": 2, "ba": 3, "aba": 4})
    owners, indices, counts = codes.counts_many(["a", "b", "", "ab", "a"])
    assert (owners.tolist(), indices.tolist(), counts.tolist()) == ([0, 1, 3, 3, 3, 4], [0, 1, 0, 1, 2, 0],
                                                                     [1, 1, 1, 1, 1, 1])
    assert [a.tolist() for a in codes.counts_many(["", ""])] == [[], [], []]

    chars = next(fast for fast in model._fast if fast.analyse.kind == "char")
    batch = ["ab", "", "b", "a", *(textprep.prepare(t) for t in TEXTS[:60]), "", "a"]
    owners, indices, counts = chars.char_codes.counts_many(batch)
    assert owners.tolist() == sorted(owners.tolist())
    for n, text in enumerate(batch):
        alone_indices, alone_counts = chars.char_codes.counts(text)
        assert indices[owners == n].tolist() == alone_indices.tolist(), text
        assert counts[owners == n].tolist() == alone_counts.tolist(), text

    texts = TEXTS[::7] + AWKWARD + [" ".join(TEXTS[n:n + 40]) for n in (0, 40, 80)]  # (long ones: batches by size)
    assert len(texts) > 64 * 4 and sum(map(len, texts[-3:])) > 8_000  # (several arithmetic batches)
    assert model.predict_many(texts) == [model.predict(t) for t in texts]
    alone = np.array([model.probabilities([t])[0] for t in texts])
    assert np.allclose(model.probabilities(texts), alone, rtol=0, atol=1e-15)


@pytest.mark.parametrize("path", ["kernel", "csr_array", "csr_array for mixed index types"])
def test_the_sparse_product_is_the_dense_one_through_the_kernel_and_through_csr_array(path: str, monkeypatch) -> None:
    """``model.sparse_product``: scipy's kernel called directly where this scipy has it, and
    csr_array where it does not or where the arrays are not as the kernel takes them (two index
    types), each add rows x weights to what ``out`` holds, as the dense product does (rows with
    no features too)."""
    if path == "kernel" and model_module._csr_matvecs is None:
        pytest.skip("this scipy has no csr_matvecs where it is looked for: csr_array is used")
    if path == "csr_array":
        monkeypatch.setattr(model_module, "_csr_matvecs", None)
    rng = np.random.default_rng(7)
    weights = rng.normal(size=(50, 35))
    dense = np.zeros((4, 50))
    dense[0, [3, 17, 49]] = [0.5, 0.25, 1.0]
    dense[2, [0, 3]] = [0.75, 0.125]  # (rows 1 and 3: no features)
    rows, cols = np.nonzero(dense)
    indptr = np.searchsorted(rows, np.arange(5))
    start = rng.normal(size=(4, 35))
    out = start.copy()
    index_type = np.int32 if path == "csr_array for mixed index types" else np.int64
    model_module.sparse_product(dense[rows, cols], cols.astype(index_type), indptr.astype(np.int64), weights, out)
    assert np.allclose(out, start + dense @ weights, rtol=0, atol=1e-12)


# -- patterns behind first-character guards ------------------------------------------------------------


def _unguarded() -> list[tuple[str, re.Pattern[str], re.Pattern[str]]]:
    """(name, the pattern as it was written, the one in use)."""
    rs = repeat_signals
    pairs = [
        ("follow-up cues", re.compile("|".join([rf"(?<![a-z])(?:{p})" for p in rs._FOLLOW_UP_EN]
                                               + [p.translate(rs._TRAD) for p in rs._FOLLOW_UP_ZH]), re.IGNORECASE),
         rs._FOLLOW_UP),
        ("new-problem cues", re.compile("|".join([rf"(?<![a-z])(?:{p})" for p in rs._NEW_PROBLEM_EN]
                                                 + [p.translate(rs._TRAD) for p in rs._NEW_PROBLEM_ZH]), re.IGNORECASE),
         rs._NEW_PROBLEM),
        ("concept words", re.compile(rf"(?<![a-z]){rs._trie([t for t in rs._CANON if t.isascii()], '(?![a-z])')}"
                                     rf"|{rs._trie([t for t in rs._CANON if not t.isascii()])}"), rs._CONCEPT_RE),
    ]
    sources = [formal._FILING_ZH, formal._FILING_EN, formal._ESCALATION_ZH, formal._ESCALATION_EN,
               formal._REGULATOR_ZH, formal._REGULATOR_EN]
    pairs += [(f"formal cue {i}", re.compile(source), used)
              for i, (source, (_, used)) in enumerate(zip(sources, formal._CUES)) if i]  # not 0: it has none
    pairs += [(f"amount prefix {c}", re.compile(r"(?<![A-Za-z0-9])" + p + r"\s*" + extract._NUM), used)
              for (p, c, _), (used, _, _) in zip(extract._PREFIX, extract._PREFIX_RE)]
    pairs += [(f"amount suffix {c}", re.compile(r"(?<![\d.,])" + extract._NUM + s, re.IGNORECASE), used)
              for (s, c, _), (used, _, _) in zip(extract._SUFFIX, extract._SUFFIX_RE)]
    txn = re.compile(extract._TXN_LABEL + extract._TXN_SEPARATOR + r"((?:[A-Za-z]{1,4}(?: [A-Za-z]{1,4}){0,2}[ -](?=\d))?"
                     r"[A-Za-z0-9][A-Za-z0-9-]{4,40}" + extract._ID_GROUP + r"{0,4})(?![A-Za-z0-9@])", re.IGNORECASE)
    pairs += [("labelled transaction id", txn, extract._TXN_LABELLED),
              ("bare transaction id", re.compile(r"(?<![A-Za-z0-9])(T ?\d{12,30})(?![A-Za-z0-9])"), extract._TXN_BARE),
              ("transaction code", re.compile(r"(?<![A-Za-z0-9@./_-])((?:(?=[A-Z0-9-]*[A-Z])(?=(?:[A-Z-]*\d){5})[A-Z0-9]+"
                                              r"(?:-[A-Z0-9]+)*|(?:[A-Z] ){1,3}\d{5,})" + extract._ID_GROUP
                                              + r"*)(?![A-Za-z0-9@/_-]|\.\w)"), extract._TXN_CODE),
              ("dashed digits", re.compile(r"(?<![A-Za-z0-9+-])(\d{4,5}(?:-\d{4,5}){2,3})(?![A-Za-z0-9-])"),
               extract._TXN_DASHED),
              ("long digits", re.compile(r"(?<![A-Za-z0-9.,+-])(\d{12,30})(?![A-Za-z0-9.,-])"), extract._LONG_DIGITS)]
    return pairs


def _found(pattern: re.Pattern[str], text: str) -> list[tuple[tuple[int, int], tuple, dict]]:
    return [(m.span(), m.groups(), m.groupdict()) for m in pattern.finditer(text)]


@functools.cache
def _variants() -> list[str]:
    """Every text as it is and as each reader folds it before its patterns run."""
    out: dict[str, None] = {}
    for text in TEXTS:
        for variant in (text, repeat_signals._fold(text), textprep.prepare_for_rules(text), extract._fold(text),
                        extract.digit_view(extract._spelled(extract._fold(text))).text):
            out[variant] = None
    return list(out)


@pytest.mark.parametrize("name, plain, used", _unguarded(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_guarded_pattern_finds_what_the_plain_one_does(name: str, plain: re.Pattern[str], used: re.Pattern[str]) -> None:
    assert plain.pattern != used.pattern, "no guard: nothing to compare"
    for variant in _variants():
        assert _found(used, variant) == _found(plain, variant), (name, variant)


@functools.cache
def _case_blind(letter: str) -> tuple[str, ...]:
    """Every character a case-blind pattern takes for ``letter`` (the Kelvin sign for a "k", a dotless
    and a dotted capital i for an "i", ...)."""
    return tuple(chr(c) for c in range(0x10000) if re.fullmatch(re.escape(letter), chr(c), re.IGNORECASE))


def _amount_texts() -> list[str]:
    """The corpus, and each currency's prefixes and units after and before a number, as written and
    with each letter swapped for every character a case-blind pattern takes for it, in full width
    too (what a text is folded to before its patterns run)."""
    words = ["HK$", "HKD", "US$", "USD", "MOP", "MOP$", "NT$", "TWD", "S$", "SGD", "CA$", "C$", "CAD", "A$", "AUD", "₱",
             "PHP", "¥", "￥", "RMB", "CNY", "人民币", "$", "€", "EUR", "£", "GBP", "JPY", "元", "块", "港币", "港元", "蚊",
             "美元", "美金", "dollar", "dollars", "buck", "bucks", "欧元", "euro", "euros", "英镑", "pound", "pounds", "quid"]
    variants = set()
    for word in words:
        variants |= {word, word.upper(), word.lower(), word.title(), word.translate(_FULL_WIDTH)}
        for i, ch in enumerate(word):
            variants |= {word[:i] + other + word[i + 1:] for other in _case_blind(ch)} if ch.isascii() else set()
    texts = list(TEXTS)
    for word in sorted(variants):
        texts += [f"退 12.50{word}", f"charged 12 {word} twice", f"{word}12.50 扣了", f"{word} 1,280.00", f"58.8{word}!"]
    return texts


_FULL_WIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


def test_spelled_letters_are_looked_for_only_where_they_can_be() -> None:
    spelled = ["T as in Tom", "t AS IN tango 7", "P as in Peter, X as in x-ray", "7730 dash 2291", "7730 DASH\t2291",
               "ſ as in ſam", "B aſ in Bob"]
    for text in [extract._fold(t) for t in TEXTS + spelled] + spelled:
        assert extract._spelled(text) == extract._SPELLED.sub(lambda m: m.group(1) or "-", text), text
    assert extract._spelled(extract._fold("EB dash 7712 T as in Tom")) == "EB-7712 T"


def test_the_amount_prechecks_skip_only_texts_the_patterns_find_nothing_in() -> None:
    for text in map(extract._fold, _amount_texts()):
        digits = extract._DIGIT.search(text) is not None
        for regex, needles, _ in extract._PREFIX_RE:
            if not (digits and any(needle in text for needle in needles)):
                assert not regex.search(text), text
        lowered = text.lower()
        for regex, needles, _ in extract._SUFFIX_RE:
            if not (digits and any(needle in lowered for needle in needles)):
                assert not regex.search(text), text
        for regex in [extract._BARE_DECIMAL, extract._BARE_INTEGER, extract._BARE_INTEGER_BEFORE]:
            if not digits:
                assert not regex.search(text), text


@pytest.mark.parametrize("alternatives, flags, text, expected", [
    ([r"^\s*还有", "分开"], 0, "  还有 一个, 分开", [(0, 4), (9, 11)]),  # anchored: the start is let through
    ([r"(?:(?<=\s)|^)(?:agent|caller)\s*:"], re.IGNORECASE, "Agent: hi CALLER : x", [(0, 6), (10, 18)]),
    ([r"\d+(?:st|nd) time", "twice"], 0, "2nd time, 21st time, twice", [(0, 8), (10, 19), (21, 26)]),
    (["ab", "x*"], 0, "zab", [(0, 0), (1, 3), (3, 3)]),  # can match nothing: left as it is
    ([r"[^a]b"], 0, "cb ab", [(0, 2)]),  # a negated class: left as it is
    (["b", "bc", "abc", "c"], 0, "abc bc", [(0, 3), (4, 5), (5, 6)]),  # the first alternative that fits wins
])
def test_first_char_guard(alternatives: list[str], flags: int, text: str, expected: list[tuple[int, int]]) -> None:
    pattern = "|".join(alternatives)
    guarded = first_char_guard(pattern, flags)
    assert [m.span() for m in re.finditer(pattern, text, flags)] == expected
    assert [m.span() for m in re.finditer(guarded, text, flags)] == expected
    if alternatives in (["ab", "x*"], [r"[^a]b"]):
        assert guarded == pattern
    for chunk in (1, 2, 8):
        assert [m.span() for m in re.finditer(guarded_alternation(alternatives, flags, chunk), text, flags)] == expected


# -- the PII memo --------------------------------------------------------------------------------------


NUMBERS = (pii.CARD, pii.PHONE, pii.ID_NUMBER)


def test_the_pii_memo_answers_what_a_fresh_search_does() -> None:
    """Asked in either order (all kinds, then the number kinds: the worker's masked copies, then
    the fingerprint's identifiers), and again, the answers are a fresh search's."""
    for i, text in enumerate(TEXTS):
        everything = pii._find_pii(text, frozenset(pii.KINDS))
        numbers = pii._find_pii(text, frozenset(NUMBERS))
        order = [(pii.KINDS, everything), (NUMBERS, numbers)]
        for kinds, fresh in (order if i % 2 else order[::-1]) * 2:
            found = pii.find_pii(text, kinds)
            assert found == fresh, text
            found.append(pii.Found(0, 0, "email"))  # the caller's list is its own
        masked = text
        for f in reversed(everything):
            masked = masked[:f.start] + pii._placeholder(f.kind, text[f.start:f.end]) + masked[f.end:]
        assert pii.mask_pii(text) == masked, text


def test_an_email_that_holds_a_phone_number_is_searched_again_for_the_numbers() -> None:
    text = "13800138000@qq.com"
    assert [f.kind for f in pii.find_pii(text)] == ["email"]
    assert [f.kind for f in pii.find_pii(text, NUMBERS)] == ["phone"]


# -- the repeat check's memo and a long number ---------------------------------------------------------


def test_memoised_terms_and_amounts_are_the_callers_own_lists() -> None:
    text = "充值100元没到账 top-up of HK$100 not credited"
    first = repeat_signals.terms(text)
    first.append("mutated")
    assert repeat_signals.terms(text) == first[:-1]
    amounts = repeats.amounts_in(text)
    amounts.insert(0, "1.00")
    assert repeats.amounts_in(text) == amounts[1:]
    found = extract.extract_amounts(text)
    found.clear()
    assert [a.value for a in extract.extract_amounts(text)] == [100, 100]


def test_a_28_digit_order_number_is_no_amount_and_breaks_nothing() -> None:
    assert repeats.numbers_in("order 4200001234202611081234567890, 金额 256") == {"256.00"}


# -- the incident check's tokens ----------------------------------------------------------------------


def _longest_first(words: list[str]) -> re.Pattern[str]:
    """The plain form of ``literal_trie``: the words escaped, as one alternation, longest first."""
    return re.compile("|".join(sorted(map(re.escape, words), key=len, reverse=True)))


_PLAIN_CONCEPTS = _longest_first([t for ts in incidents.CONCEPTS.values() for t in ts])


def _plain_tokens(text: str) -> frozenset[str]:
    """The incident tokens as they were: the concepts' words as one alternation, longest first, and
    every token found checked in turn."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PLAIN_CONCEPTS.sub(lambda m: f" {incidents._CANON[m.group(0)]} ", text)
    return frozenset(t for t in incidents._TOKEN.findall(text) if t not in incidents.STOP and not t.isdigit())


def test_incident_tokens_are_the_plain_ones() -> None:
    concept_words = [t for ts in incidents.CONCEPTS.values() for t in ts]
    texts = TEXTS + [" ".join(concept_words), "".join(concept_words), "crashe crashes crashing crash",
                     "can not open cannot open can't open can'", "app application applic 应用应用", "logging i"]
    for text in texts:
        assert incidents.tokens(text) == _plain_tokens(text), text


@pytest.mark.parametrize("words", [
    ["a", "ab", "abc", "b"], ["abc", "ab", "a"], ["x.y", "x*", "x"], ["can't", "can't open", "cannot", "can not"],
    ["失败", "失", "败了"], ["ab", "ba", "aba", "bab"],
])
def test_literal_trie_matches_the_longest_word_first_alternation(words: list[str]) -> None:
    plain = _longest_first(words)
    trie = re.compile(literal_trie(words))
    alphabet = sorted(set("".join(words)) | {" "})
    rng = random.Random(len(words))
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        assert [m.span() for m in trie.finditer(text)] == [m.span() for m in plain.finditer(text)], text
    with pytest.raises(ValueError):
        literal_trie(["a", ""])
