"""Benchmark: one routing decision with 200 rules (goal p99 <= 0.2 ms), against the built-in
seven-rule table in the same run.

    .venv/bin/python bench/routing.py [--rules 200] [--decisions 20000]

The 200 rules mix every condition kind (categories, channels, languages, tiers, amounts,
currencies, keywords, a regex, business hours, repeat count); the messages are the bench's zh/en
complaint texts with random facts, so most decisions walk far down the list or reach the default.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.categorise import categorise  # noqa: E402

from normalizer.categories import CATEGORIES
from router.rules import Condition, Engine, Facts, Rule, RuleSet, Target, builtin_rules, validate  # noqa: E402

TEXTS = ["我被重复扣款了 ¥128.50，交易号 T2026112212345678，请尽快退款", "I was charged twice for my coffee, $4.50",
         "app闪退打不开，更新以后无法使用", "提现手续费太高了，要求减免", "Withdrawal pending since Monday, please help",
         "账户被冻结了，无法转账", "my balance shows less than it should", "我要投诉你们的客服态度"]
CHANNELS = ["app", "email", "twilio_sms", "whatsapp", "wechat", "telegram", "phone"]


def big_rule_set(count: int, rng: random.Random) -> RuleSet:
    queues = [f"q{n:02d}" for n in range(20)]
    rules = []
    for n in range(count):
        kind = n % 8
        if kind == 0:
            when = Condition(categories=[rng.choice(CATEGORIES)], channels=[rng.choice(CHANNELS)], tiers=[f"tier{n}"])
        elif kind == 1:
            low = rng.randint(10_000, 90_000)
            when = Condition(amount_min=str(low), amount_max=str(low + 5), currencies=["USD"])
        elif kind == 2:
            when = Condition(keywords=[f"keyword{n}", f"关键词{n}"])
        elif kind == 3:
            when = Condition(regex=rf"ORDER-{n:04d}-\d+")
        elif kind == 4:
            when = Condition(languages=["en"], channels=["fax"])
        elif kind == 5:
            when = Condition(repeat_count_min=50 + n)
        elif kind == 6:
            when = Condition(business_hours=False, tiers=[f"gold{n}"])
        else:
            when = Condition(categories=[rng.choice(CATEGORIES)], formal=True, keywords=[f"special{n}"])
        rules.append(Rule(id=f"r{n:03d}", when=when, then=Target(skill=rng.choice(queues))))
    rule_set = RuleSet(queues=queues, rules=rules, default=Target(skill="q00"))
    assert not [p for p in validate(rule_set) if "unreachable" not in p.problem], validate(rule_set)[:3]
    return rule_set


def time_decisions(engine: Engine, facts: list[Facts]) -> list[float]:
    out = []
    for f in facts:
        t0 = time.perf_counter_ns()
        engine.decide(f)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--decisions", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(7)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    big = Engine(big_rule_set(args.rules, rng), 1)
    small = Engine(builtin_rules(), 0)
    facts = []
    for _ in range(args.decisions):
        text = rng.choice(TEXTS)
        cat = categorise(text)
        facts.append(Facts(category=cat.category, formal=cat.formal_complaint, channel=rng.choice(CHANNELS),
                           language="zh" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en", text=text,
                           amount=Decimal(rng.randint(1, 100_000)), currency=rng.choice(["CNY", "USD"]),
                           tier=rng.choice([None, "vip", "gold"]), repeat_count=rng.randint(0, 3),
                           in_business_hours=rng.random() < 0.7))
    time_decisions(big, facts[:2000])  # warm-up
    big_t = time_decisions(big, facts)
    small_t = time_decisions(small, facts)
    reached_default = sum(big.decide(f).rule == "default" for f in facts)
    print(f"{args.rules} rules: decision p50 {statistics.median(big_t) * 1000:.1f} us, p99 {pct(big_t, 99) * 1000:.1f} us, "
          f"max {max(big_t) * 1000:.1f} us; {reached_default / len(facts):.0%} walked every rule to the default "
          f"(goal p99 <= 200 us)")
    print(f"built-in {len(small.compiled)} rules: p50 {statistics.median(small_t) * 1000:.1f} us, "
          f"p99 {pct(small_t, 99) * 1000:.1f} us | p99 ratio {pct(big_t, 99) / pct(small_t, 99):.1f}x")


if __name__ == "__main__":
    main()
