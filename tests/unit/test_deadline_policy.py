from datetime import date, datetime, timezone

import pytest

from router.deadlines import BusinessHours, DeadlinePolicy, parse_member, timer_members
from router.survey import parse_score

SHANGHAI_FRIDAY_17 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)  # 17:00 in Shanghai, a Friday


def test_business_hours_count_working_time_only():
    hours = BusinessHours()  # Mon–Fri 09:00–18:00 Asia/Shanghai
    due = hours.add(SHANGHAI_FRIDAY_17, 2 * 3600)  # one hour on Friday, one on Monday
    assert due == datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)  # Monday 10:00 in Shanghai
    night = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)  # Tuesday 23:00 in Shanghai
    assert hours.add(night, 60) == datetime(2026, 11, 25, 1, 1, tzinfo=timezone.utc)  # Wednesday 09:01
    holiday = BusinessHours(holidays=[date(2026, 11, 30)])
    assert holiday.add(SHANGHAI_FRIDAY_17, 2 * 3600) == datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def test_seven_by_twenty_four_by_default_and_the_seed_standards():
    policy = DeadlinePolicy()
    assert policy.first_response_allowance("app", "other", None) == 60
    assert policy.first_response_allowance("phone", "other", None) == 30
    assert policy.first_response_allowance("email", "other", None) == 60  # online by default
    assert policy.first_response_allowance("app", "other", "vip") == 30
    assert policy.resolution_allowance(True, None) == 24 * 3600 and policy.resolution_allowance(False, None) == 48 * 3600
    d = policy.deadline("first_response", SHANGHAI_FRIDAY_17, 60)
    assert (d.due - SHANGHAI_FRIDAY_17).total_seconds() == 60 and (d.warn_at - SHANGHAI_FRIDAY_17).total_seconds() == 48


def test_escalation_levels_end_where_the_policy_ends():
    policy = DeadlinePolicy(escalation_seconds=[900])
    first = policy.deadline("first_response", SHANGHAI_FRIDAY_17, 60)
    second = policy.next_level(first, SHANGHAI_FRIDAY_17)
    assert second.kind == "escalation_2" and second.level == 2
    assert policy.next_level(second, SHANGHAI_FRIDAY_17) is None


def test_invalid_policies_are_named():
    assert DeadlinePolicy(first_response_seconds={"app": 30}).validate()
    assert DeadlinePolicy(business_hours=BusinessHours(timezone="Mars/Olympus")).validate()
    assert DeadlinePolicy(business_hours=BusinessHours(start="18:00", end="09:00")).validate()
    assert DeadlinePolicy().validate() == []


def test_timer_members_round_trip():
    d = DeadlinePolicy().deadline("resolution", SHANGHAI_FRIDAY_17, 100)
    assert set(timer_members("cmp_1", d)) == {"cmp_1|resolution|warn|1"}  # one timer at a time: the warning,
    d.warned = True
    assert set(timer_members("cmp_1", d)) == {"cmp_1|resolution|due|1"}  # then the due time
    assert parse_member("cmp_1|resolution|due|1") == ("cmp_1", "resolution", "due", 1)
    assert parse_member("garbage") is None


@pytest.mark.parametrize("text, score", [
    ("5", 5), ("5分", 5), ("4 stars", 4), ("３", 3), ("五分", 5), ("二", 2), ("非常满意", 5), ("满意", 4),
    ("一般", 3), ("不满意", 2), ("非常不满意", 1), ("very satisfied", 5), ("Satisfied!", 4), ("ok", 3),
    ("bad", 2), ("terrible", 1), ("1/5", 1), ("满意，谢谢", 4),
])
def test_survey_scores_in_words_and_digits(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", ["6", "0", "I paid 5 yuan twice and want it back", "still not refunded", "",
                                  "不满意你们的处理，我要继续投诉这个问题"])
def test_what_is_not_a_score(text):
    assert parse_score(text) is None
