"""The formal-complaint flag follows shared/corpus/README.md: filing, escalation, regulator or press
(with or without 投诉) are formal; conditional threats, negations, take-backs, follow-ups on an
earlier complaint and "escalate to your fraud team" are not. Sentences written for this test, in
Chinese (simplified, traditional, ASR-spaced) and English."""

from __future__ import annotations

import pytest

from router.understanding.formal import formal_verdict

FORMAL = [
    # filing
    ("我要投诉你们，转账被扣了两次", "filing"),
    ("我要正式投诉 客服三天没回我", "filing"),
    ("我要申訴！你們的APP亂扣費", "filing"),
    ("喂 我 要 投 诉 你 们 的 客 服 态 度", "filing"),
    ("I want to make a formal complaint about the fee you took.", "filing"),
    ("Please treat this as a formal complaint.", "filing"),
    ("Complaint about the double charge on my card", "filing"),
    ("I am writing to complain about how my refund was handled.", "filing"),
    # escalation, with or without 投诉
    ("三天了没人理 我要求升级处理", "escalation"),
    ("叫你们领导给我打电话", "escalation"),
    ("Nobody has called me back. Please escalate this.", "escalation"),
    ("No refund after three weeks, please escalate", "escalation"),
    ("I want to speak to a supervisor about my frozen account.", "escalation"),
    # regulator or press, with or without 投诉
    ("我已经向人民银行反映了 你们看着办", "regulator"),
    ("已经打了12315", "regulator"),
    ("我要向媒体曝光你们", "regulator"),
    ("I have reported this to the CFPB.", "regulator"),
    ("I've lodged a complaint with the Financial Ombudsman about the missing refund.", "regulator"),
    ("I'm going to the press with this today.", "regulator"),
    # a take-back that ends in a complaint
    ("你们再不管 不对 我现在就要投诉", "filing"),
]

NOT_FORMAL = [
    # conditional threats
    ("如果这周不能退款，我就去投诉", "conditional"),
    ("再不处理我就打12315", "conditional"),
    ("退不了的话我会向银保监会投诉", "conditional"),
    ("把手续费退给我 不然我去找电视台", "conditional"),
    ("I'll file a complaint with the regulator if this isn't fixed by Friday.", "conditional"),
    ("If you don't refund me I will escalate this to the ombudsman.", "conditional"),
    # negations
    ("不是投诉啊 就是问问手续费怎么算", "negated"),
    ("我不想投诉 只想知道钱什么时候到", "negated"),
    ("Not a complaint, just a question about the fee.", "negated"),
    ("I'm not making a formal complaint, I just want the steps to close my account.", "negated"),
    ("I don't want to complain, I only need my statement.", "negated"),
    # escalate to your fraud team
    ("Please escalate to your fraud team: two payments I never made.", "fraud_team"),
    # taken back
    ("我想投诉 不对 不是投诉 我是想提个建议", "retracted"),
    # a follow-up on an earlier complaint, no new filing
    ("上周投诉的事 有结果了吗", "reference"),
    ("Any update on the complaint I filed last week?", "reference"),
    ("my case was escalated on Monday, any news?", "reference"),
    # a complaint about a merchant, explicitly not about us
    ("我要投诉商家 不是投诉你们 帮我协商一下", "merchant"),
    # no cue at all
    ("我的余额怎么少了200", None),
    ("App crashes when I open statements", None),
]


@pytest.mark.parametrize(("text", "kind"), FORMAL)
def test_formal(text: str, kind: str) -> None:
    verdict = formal_verdict(text)
    assert verdict.formal_complaint, (text, verdict.cues)
    assert verdict.reason.startswith(kind), (text, verdict.reason)


@pytest.mark.parametrize(("text", "why"), NOT_FORMAL)
def test_not_formal(text: str, why: str | None) -> None:
    verdict = formal_verdict(text)
    assert not verdict.formal_complaint, (text, verdict.cues)
    if why is None:
        assert verdict.cues == ()
    else:
        assert any(c.verdict == why for c in verdict.cues), (text, verdict.cues)


def test_the_whole_text_search_first_changes_no_verdict():
    """``formal_verdict`` answers "no cue" when no cue pattern matches anywhere in the text, before
    cutting it into clauses: on every message of our corpus, and on this test's sentences with
    their sentence ends moved about, it gives what the clause-by-clause reading gives."""
    from router.understanding import corpus
    from router.understanding.formal import _verdict
    from router.understanding.textprep import prepare_for_rules

    texts = [r["text"] for r in corpus.load_records(corpus.data_files())]
    sentences = [t for t, _ in FORMAL] + [t for t, _ in NOT_FORMAL]
    texts += sentences + ["。".join(sentences[i:i + 3]) for i in range(len(sentences))]
    texts += [t.replace(" ", "\n") for t in sentences] + [t.replace("，", "!") for t in sentences]
    assert len(texts) > 1000
    for text in texts:
        assert formal_verdict(text) == _verdict(prepare_for_rules(text)), text
