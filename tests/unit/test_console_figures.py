"""The supervisors' charts from the complaints themselves: when a case waited in its queue, what
each time step counts, and the service figures by day in the desk's time zone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.console_figures import charts, desk_timezone, trend, waiting_intervals
from normalizer.schema import Complaint, ComplaintStatus, Contact, Deadline, HistoryEvent
from router.deadlines import BusinessHours, DeadlinePolicy

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def case(n: int, *, created: float, events: list[tuple[float, str]], channel: str = "app", skill: str = "payments",
         first_response: float | None = None, breached: float | None = None, status: str = "accepted",
         satisfaction: int | None = None) -> Complaint:
    deadlines = [Deadline(kind="first_response", due=at(created + 1), state="breached", breached_at=at(breached))] \
        if breached is not None else []
    return Complaint(
        id=f"c{n}", case_number=f"C-20261201-{n:06d}", status=ComplaintStatus(status), category="payment_amount",
        formal_complaint=False, channel=channel, customer_id=f"cus{n}", contact=Contact(kind="app_user", value=f"u{n}"),
        language="zh", created_at=at(created), updated_at=at(created), skill=skill,
        first_responded_at=at(first_response) if first_response is not None else None, deadlines=deadlines,
        history=[HistoryEvent(at=at(m), actor="worker", action=a) for m, a in events], satisfaction=satisfaction)


def test_a_case_waits_from_routing_to_its_claim_and_again_after_a_lease_runs_out():
    c = case(1, created=0, events=[(0, "routed"), (5, "claimed"), (10, "lease_expired"), (12, "claimed"),
                                   (13, "replied")])
    assert waiting_intervals(c) == [(at(0), at(5)), (at(10), at(12))]
    still = case(2, created=0, events=[(0, "routed")])
    assert waiting_intervals(still)[0][0] == at(0) and waiting_intervals(still)[0][1] > at(10_000)


def test_each_step_counts_depth_breaches_arrivals_and_first_responses_against_the_standard():
    complaints = [
        case(1, created=1, events=[(1, "routed"), (25, "claimed")], first_response=26),  # 25 min: over 60 s
        case(2, created=2, events=[(2, "routed")], breached=14),  # still waiting, breached in the 2nd step
        case(3, created=15, events=[(15, "routed"), (15.5, "replied")], first_response=15.5, channel="phone",
             skill="tech"),  # answered in 30 s: within the phone standard
    ]
    figures = charts(complaints, DeadlinePolicy(), since=T0, until=at(30), step=timedelta(minutes=10))
    assert figures["points"] == [at(10).isoformat(), at(20).isoformat(), at(30).isoformat()]
    assert figures["queues"]["payments"] == {"depth": [2, 2, 1], "breaches": [0, 1, 0]}
    assert figures["queues"]["tech"]["depth"] == [0, 0, 0]
    app, phone = figures["channels"]["app"], figures["channels"]["phone"]
    assert app["arrivals"] == [2, 0, 0] and phone["arrivals"] == [0, 1, 0]
    assert app["breaches"] == [0, 1, 0]
    assert app["first_response_p50_seconds"] == [None, None, 1500.0]
    assert app["first_response_within_standard"] == [None, None, 0.0]
    assert phone["first_response_within_standard"] == [None, 1.0, None]
    assert (app["standard_seconds"], phone["standard_seconds"]) == (60, 30)


def test_the_trend_groups_by_the_desks_day():
    policy = DeadlinePolicy(business_hours=BusinessHours(timezone="Asia/Shanghai"))
    assert desk_timezone(policy) == "Asia/Shanghai"
    # 17:00 UTC on 1 December is 01:00 on 2 December in Shanghai
    late = case(1, created=9 * 60, events=[], status="resolved", first_response=9 * 60 + 0.5, satisfaction=5)
    early = case(2, created=0, events=[], breached=2)
    figures = trend([late, early], policy, days=2, today=at(9 * 60 + 1))
    assert figures["timezone"] == "Asia/Shanghai"
    first, second = figures["days"]
    assert (first["day"], first["complaints"], first["breaches"], first["resolution_rate"]) == ("2026-12-01", 1, 1, 0.0)
    assert (second["day"], second["complaints"], second["resolution_rate"]) == ("2026-12-02", 1, 1.0)
    assert (second["first_response_within_standard"], second["satisfaction"]) == (1.0, 1.0)


def test_a_step_longer_than_the_window_gives_one_point_not_an_error():
    """?hours=1&step_minutes=240 (the fuzzer found it: an IndexError, a 500): one point, the window's end."""
    c = case(1, created=30, events=[(30, "routed")], first_response=40, breached=45)
    got = charts([c], DeadlinePolicy(), since=at(0), until=at(60), step=timedelta(minutes=240))
    assert got["points"] == [at(60).isoformat()]
    assert got["channels"]["app"]["arrivals"] == [1] and got["channels"]["app"]["breaches"] == [1]
    assert got["queues"]["payments"]["depth"] == [1]
