"""The routing rules' triage section: below the threshold the model's guess goes to triage."""

import msgspec

from router.rules import Engine, Facts, RuleSet, Triage, builtin_rules, to_toml, validate


def _rules(below: float = 0.6, queue: str = "triage") -> RuleSet:
    base = builtin_rules()
    return msgspec.structs.replace(base, queues=[*base.queues, "triage"], triage=Triage(below=below, queue=queue))


def _facts(confidence):
    return Facts(category="payment_amount", formal=False, channel="app", language="en", text="charged twice",
                 confidence=confidence)


def test_unsure_guesses_go_to_triage_others_by_the_rules():
    engine = Engine(_rules(), 3)
    unsure = engine.decide(_facts(0.59))
    assert (unsure.skill, unsure.rule, unsure.tags) == ("triage", "triage", ("triage",))
    assert engine.decide(_facts(0.6)).skill == "payments"
    assert engine.decide(_facts(None)).skill == "payments"  # a hint, a plugin, keywords, an agent: never triaged
    assert Engine(builtin_rules(), 0).decide(_facts(0.1)).skill == "payments"  # no triage section


def test_triage_is_validated_and_written_as_toml():
    assert validate(_rules()) == []
    problems = validate(_rules(queue="nowhere"))
    assert [p.field for p in problems] == ["triage.queue"]
    assert "[triage]" in to_toml(_rules()) and "below = 0.6" in to_toml(_rules())
