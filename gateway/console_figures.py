"""The supervisors' pictures, computed from the complaints themselves: queue depth, first-response
times against the standard and breaches per time step (queue and channel), and the service
figures by day in the desk's time zone.

Nothing is counted per message for these: a case's history says when it entered and left its
queue, its deadlines when they were breached, ``first_responded_at`` when it was first answered.
A chart costs one read of the recent complaints when a supervisor looks, not a Redis command per
message on the intake path (which is what a per-minute counter would cost).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from normalizer.schema import Complaint
from router.deadlines import DeadlinePolicy

#: History actions that put a case in its queue, and those that take it out.
ENTERS_QUEUE = frozenset({"routed", "lease_expired", "reopened", "released", "handed_back"})
LEAVES_QUEUE = frozenset({"claimed", "replied", "resolved", "merged_into"})


def desk_timezone(policy: DeadlinePolicy) -> str:
    """The desk's time zone: its business hours', else its quiet hours', else Asia/Shanghai."""
    if policy.business_hours is not None:
        return policy.business_hours.timezone
    if policy.progress.quiet_hours is not None:
        return policy.progress.quiet_hours.timezone
    return "Asia/Shanghai"


def first_response_standard(policy: DeadlinePolicy, channel: str) -> int:
    allowances = policy.first_response_seconds
    return allowances.get(channel, allowances.get("default", 60))


def waiting_intervals(complaint: Complaint) -> list[tuple[datetime, datetime]]:
    """When the case sat in its queue, from its history (still waiting: until ``datetime.max``)."""
    intervals: list[tuple[datetime, datetime]] = []
    entered: datetime | None = None
    for event in sorted(complaint.history, key=lambda h: h.at):
        if event.action in ENTERS_QUEUE and entered is None:
            entered = event.at
        elif event.action in LEAVES_QUEUE and entered is not None:
            intervals.append((entered, event.at))
            entered = None
    if entered is not None:
        intervals.append((entered, datetime.max.replace(tzinfo=entered.tzinfo)))
    return intervals


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def charts(complaints: Iterable[Complaint], policy: DeadlinePolicy, *, since: datetime, until: datetime,
           step: timedelta) -> dict[str, Any]:
    """Series per step between ``since`` and ``until`` (each point: the step that ends there)."""
    ends: list[datetime] = []
    t = since + step
    while t <= until + timedelta(microseconds=1):
        ends.append(t)
        t += step
    if not ends:  # a step longer than the window: one point, the window's end
        ends.append(until)
    n = len(ends)

    def index(moment: datetime | None) -> int | None:
        if moment is None or moment <= since or moment > until:
            return None
        return min(n - 1, int((moment - since) / step))

    depth: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    queue_breaches: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    channel_breaches: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    arrivals: dict[str, list[int]] = defaultdict(lambda: [0] * n)
    waits: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(n)])
    within: dict[str, list[list[bool]]] = defaultdict(lambda: [[] for _ in range(n)])
    for c in complaints:
        skill = c.skill or "-"
        for start, stop in waiting_intervals(c):
            series = depth[skill]  # the points with start <= end < stop, found by arithmetic, not a scan
            first = max(0, math.ceil((start - since) / step) - 1)
            last = n if stop.year == datetime.max.year else min(n, math.ceil((stop - since) / step) - 1)
            for i in range(first, last):
                series[i] += 1
        for d in c.deadlines:
            i = index(d.breached_at)
            if d.state == "breached" and i is not None:
                queue_breaches[skill][i] += 1
                channel_breaches[c.channel][i] += 1
        i = index(c.created_at)
        if i is not None:
            arrivals[c.channel][i] += 1
        i = index(c.first_responded_at)
        if i is not None and c.first_responded_at is not None:
            seconds = (c.first_responded_at - c.created_at).total_seconds()
            waits[c.channel][i].append(seconds)
            within[c.channel][i].append(seconds <= first_response_standard(policy, c.channel))
    channels = sorted(set(arrivals) | set(waits) | set(channel_breaches))
    return {
        "since": since.isoformat(), "until": until.isoformat(), "step_seconds": int(step.total_seconds()),
        "points": [e.isoformat() for e in ends],
        "queues": {q: {"depth": depth.get(q, [0] * n), "breaches": queue_breaches.get(q, [0] * n)}
                   for q in sorted(set(depth) | set(queue_breaches))},
        "channels": {ch: {
            "arrivals": arrivals.get(ch, [0] * n),
            "breaches": channel_breaches.get(ch, [0] * n),
            "first_response_p50_seconds": [_p50(w) for w in waits[ch]] if ch in waits else [None] * n,
            "first_response_within_standard": [round(sum(w) / len(w), 4) if w else None for w in within[ch]]
            if ch in within else [None] * n,
            "standard_seconds": first_response_standard(policy, ch),
        } for ch in channels},
    }


def trend(complaints: Iterable[Complaint], policy: DeadlinePolicy, *, days: int, today: datetime) -> dict[str, Any]:
    """The service figures per day (of the desk's time zone) a case was opened on."""
    zone = ZoneInfo(desk_timezone(policy))
    last = today.astimezone(zone).date()
    labels = [(last - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    slot = {label: i for i, label in enumerate(labels)}
    rows = [{"day": label, "complaints": 0, "resolved": 0, "first_responses": 0, "within_standard": 0,
             "surveys": 0, "satisfied": 0, "breaches": 0} for label in labels]
    for c in complaints:
        i = slot.get(c.created_at.astimezone(zone).date().isoformat())
        if i is None:
            continue
        row = rows[i]
        row["complaints"] += 1
        row["resolved"] += c.status.value in ("resolved", "closed")
        if c.first_responded_at is not None:
            row["first_responses"] += 1
            row["within_standard"] += ((c.first_responded_at - c.created_at).total_seconds()
                                       <= first_response_standard(policy, c.channel))
        if c.satisfaction is not None:
            row["surveys"] += 1
            row["satisfied"] += c.satisfaction >= 4
        row["breaches"] += sum(1 for d in c.deadlines if d.state == "breached")
    for row in rows:
        row["resolution_rate"] = round(row["resolved"] / row["complaints"], 4) if row["complaints"] else None
        row["first_response_within_standard"] = (round(row["within_standard"] / row["first_responses"], 4)
                                                 if row["first_responses"] else None)
        row["satisfaction"] = round(row["satisfied"] / row["surveys"], 4) if row["surveys"] else None
    return {"timezone": str(zone), "days": rows}


__all__ = ["ENTERS_QUEUE", "LEAVES_QUEUE", "charts", "desk_timezone", "first_response_standard", "trend",
           "waiting_intervals"]
