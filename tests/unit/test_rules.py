"""The routing rule language: validation (every error named by rule and field), first match
wins, each condition, JSON and TOML."""

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from router.rules import (Condition, Engine, Facts, Rule, RuleSet, Target, builtin_rules, load_file, to_toml,
                          validate)

ROOT = Path(__file__).resolve().parents[2]


def rs(*rules, queues=("general", "payments", "vip"), default="general"):
    return RuleSet(queues=list(queues), rules=list(rules), default=Target(skill=default) if default else None)


def rule(id, skill="payments", **when):
    return Rule(id=id, when=Condition(**when), then=Target(skill=skill))


def problems(rule_set):
    return {(p.rule, p.field, p.problem.split(":")[0].split(" (")[0]) for p in validate(rule_set)}


@pytest.mark.parametrize("rule_set, expected", [
    (rs(rule("a", skill="nowhere")), ("a", "then.skill", "unknown skill queue 'nowhere'")),
    (rs(default=None), ("default", "default", "a default target is required")),
    (rs(default="nowhere"), ("default", "default.skill", "unknown skill queue 'nowhere'")),
    (rs(rule("a"), rule("b", categories=["payment_amount"])), ("b", "when", "unreachable")),
    (rs(rule("a", categories=["payment_amount", "transaction"]), rule("b", categories=["payment_amount"], formal=True)),
     ("b", "when", "unreachable")),
    (rs(rule("a", amount_min="100"), rule("b", amount_min="500", amount_max="900")), ("b", "when", "unreachable")),
    (rs(rule("a", keywords=["refund", "退款"]), rule("b", keywords=["退款"])), ("b", "when", "unreachable")),
    (rs(rule("a", regex="(unclosed")), ("a", "when.regex", "bad regular expression")),
    (rs(rule("a", amount_min="500", amount_max="100")), ("a", "when.amount_min", "impossible range")),
    (rs(rule("a", amount_min="-5")), ("a", "when.amount_min", "an amount is a finite number ≥ 0")),
    (rs(rule("a", amount_max="lots")), ("a", "when.amount_max", "'lots' is not a decimal amount")),
    (rs(rule("a", categories=["refunds"])), ("a", "when.categories", "unknown value 'refunds'")),
    (rs(rule("a", languages=["fr"])), ("a", "when.languages", "unknown value 'fr'")),
    (rs(rule("a", channels=[])), ("a", "when.channels", "an empty list matches nothing")),
    (rs(rule("a", currencies=["yuan"])), ("a", "when.currencies", "'yuan' is not an ISO 4217 code")),
    (rs(rule("a", tiers=["vip"]), rule("a", tiers=["gold"])), ("a", "id", "another rule has this id")),
    (rs(queues=()), ("queues", "queues", "at least one skill queue")),
])
def test_each_validation_error_is_named_by_rule_and_field(rule_set, expected):
    assert expected in problems(rule_set)


def test_narrower_rules_after_broader_ones_are_fine_the_other_way_round():
    ok = rs(rule("narrow", categories=["payment_amount"], formal=True), rule("broad", categories=["payment_amount"]))
    assert validate(ok) == []
    assert validate(builtin_rules()) == []


def test_shapes_are_checked_when_decoding():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"queues": ["a"], "rules": [{"id": "x", "then": {"skill": "a", "priority": 12}}]}, RuleSet)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"queues": ["a"], "rules": [{"id": "x", "when": {"colour": "red"}, "then": {"skill": "a"}}]},
                        RuleSet)


def facts(**kw):
    base = dict(category="payment_amount", formal=False, channel="app", language="zh", text="我被重复扣款了")
    base.update(kw)
    return Facts(**base)


def test_first_match_wins_and_the_default_catches_the_rest():
    engine = Engine(rs(rule("vip", skill="vip", tiers=["vip"]), rule("pay", categories=["payment_amount"])), 7)
    assert engine.decide(facts(tier="vip")).rule == "vip"
    d = engine.decide(facts())
    assert (d.skill, d.rule, d.version, d.priority) == ("payments", "pay", 7, 6)
    assert engine.decide(facts(category="other")).rule == "default"
    assert engine.decide(facts(formal=True)).priority == 8


@pytest.mark.parametrize("when, yes, no", [
    ({"channels": ["email"]}, {"channel": "email"}, {"channel": "app"}),
    ({"languages": ["en"]}, {"language": "en"}, {"language": "zh"}),
    ({"formal": True}, {"formal": True}, {"formal": False}),
    ({"amount_min": "100", "amount_max": "200", "currencies": ["CNY"]},
     {"amount": Decimal("150"), "currency": "CNY"}, {"amount": Decimal("250"), "currency": "CNY"}),
    ({"currencies": ["USD"]}, {"amount": Decimal("1"), "currency": "USD"}, {"amount": Decimal("1"), "currency": "CNY"}),
    ({"keywords": ["Refund", "退款"]}, {"text": "please REFUND me"}, {"text": "app crashes"}),
    ({"regex": r"T\d{16}"}, {"text": "order T2026112300000001"}, {"text": "no order"}),
    ({"business_hours": False}, {"in_business_hours": False}, {"in_business_hours": True}),
    ({"repeat_count_min": 2}, {"repeat_count": 3}, {"repeat_count": 1}),
])
def test_each_condition(when, yes, no):
    engine = Engine(rs(rule("r", skill="vip", **when)), 1)
    assert engine.decide(facts(**yes)).rule == "r"
    assert engine.decide(facts(**no)).rule == "default"


def test_targets_set_priority_overrides_and_tags():
    target = Target(skill="vip", priority=2, first_response_seconds=15, tags=["vip"])
    engine = Engine(RuleSet(queues=["vip", "general"], rules=[Rule(id="v", when=Condition(tiers=["vip"]), then=target)],
                            default=Target(skill="general", priority_boost=-1)), 1)
    d = engine.decide(facts(tier="vip", formal=True))
    assert (d.priority, d.first_response_seconds, d.tags) == (2, 15, ("vip",))
    assert engine.decide(facts(category="other")).priority == 2  # other: 3, boost -1


def test_json_and_toml_files_say_the_same(tmp_path):
    toml = load_file(ROOT / "examples/rules/desk.toml")
    assert toml == load_file(ROOT / "examples/rules/desk.json")
    (tmp_path / "again.toml").write_text(to_toml(toml))
    assert load_file(tmp_path / "again.toml") == toml and validate(toml) == []
