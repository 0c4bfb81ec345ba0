"""Progress without asking (处理过程中，定期向申诉人反馈进度): the customer hears how the case stands on
their own channel when it changes state, and when nothing customer-visible was sent for a while.

``announce`` is the one place a state change tells the customer; the policy is
``DeadlinePolicy.progress`` (``router.deadlines.ProgressPolicy``), which supervisors change with
``PUT /v1/policy/deadlines``.
"""

from __future__ import annotations

from datetime import datetime

from normalizer.schema import Complaint, HistoryEvent, Reply
from router.cases.replies import notice
from router.deadlines import ProgressPolicy
from router.store import ComplaintStore, TxEffects

#: The state changes a customer is told of, and how each is worded (state, what happens next).
CHANGES: dict[str, dict[str, tuple[str, str]]] = {
    "taken": {"zh": ("客服专员已开始处理您的案件", "我们会核实情况并尽快答复您。"),
              "en": ("an agent is now handling your case", "we will check the facts and answer you soon.")},
    "awaiting_materials": {"zh": ("等待您提供材料", "收到材料后我们会立即继续处理。"),
                           "en": ("waiting for materials from you", "we carry on as soon as they arrive.")},
    "awaiting_approval": {"zh": ("处理方案已提交审批", "审批通过后我们会通知您处理结果。"),
                          "en": ("the proposed solution is awaiting approval",
                                 "we will tell you the outcome once it is approved.")},
    "decided": {"zh": ("已作出处理决定", "请留意处理结果通知。"),
                "en": ("a decision has been made", "you will receive the outcome shortly.")},
    "open": {"zh": ("仍在处理中", "我们会继续跟进并尽快答复您。"),
             "en": ("still being handled", "we are following it up and will answer you as soon as we can.")},
}


def announce(store: ComplaintStore, complaint: Complaint, effects: TxEffects, change: str, now: datetime,
             policy: ProgressPolicy) -> Reply | None:
    """Tell the customer of a state change (one of ``CHANGES``), if the policy says so; the
    update is a reply of kind ``progress`` and an entry in the case history."""
    if not policy.enabled or change not in policy.on_changes or change not in CHANGES:
        return None
    lang = "zh" if complaint.language == "zh" else "en"
    state, next_step = CHANGES[change][lang]
    reply = notice(store, complaint, effects, "progress_update", kind="progress", state=state, next=next_step)
    complaint.history.append(HistoryEvent(at=now, actor="system", action="progress_update", public=True,
                                          detail={"change": change, "reply_id": reply.id}))
    return reply


__all__ = ["CHANGES", "announce"]
