"""A customer asks where their case stands: "进度 C-20261123-000042", "status C-…", "/status C-…",
or the digits keyed on the phone. Every channel answers the same way, and only to the customer
the case belongs to (a case number is not a password: someone else's number says "not found").

This module reads and words the question and the answer; finding the case for the asking
contact is the store's (``store.case_for_contact``, which channels reach as
``services.store.case_for_contact``)."""

from __future__ import annotations

import re

from normalizer.schema import Complaint

CASE_NUMBER = re.compile(r"C-?(\d{8})-?(\d{6})", re.IGNORECASE)
_QUERY = re.compile(
    r"^\s*(?:/status(?:@\w+)?|status|进度|查询进度|查询|查进度|案件进度)\s*[:：]?\s*(C-?\d{8}-?\d{6})\s*$",
    re.IGNORECASE,
)

STATUS_WORDS = {
    "received": ("已收到", "received"),
    "accepted": ("已受理，正在排队", "accepted and waiting for an agent"),
    "in_progress": ("正在处理", "being handled"),
    "responded": ("已答复", "answered"),
    "resolved": ("已解决", "resolved"),
    "closed": ("已关闭", "closed"),
    "reopened": ("已重新打开", "reopened"),
}

NOT_FOUND = {
    "zh": "没有找到案件 {case}。请核对案件编号（格式 C-年月日-六位数字）。",
    "en": "We could not find case {case}. Please check the number (C-YYYYMMDD-NNNNNN).",
}


def normalise_case_number(text: str) -> str | None:
    match = CASE_NUMBER.search(text)
    return f"C-{match.group(1)}-{match.group(2)}" if match else None


def parse_status_query(text: str) -> str | None:
    """The case number when ``text`` is nothing but a status question, else ``None``."""
    match = _QUERY.match(text or "")
    return normalise_case_number(match.group(1)) if match else None


def last_public_update(complaint: Complaint) -> str | None:
    """The newest thing an agent told the customer, if any."""
    for reply in reversed(complaint.replies):
        if reply.kind == "agent":
            return reply.text
    return None


def status_text(complaint: Complaint | None, language: str, case_number: str = "") -> str:
    """What the customer is told, in their language."""
    zh = language == "zh"
    if complaint is None:
        return NOT_FOUND["zh" if zh else "en"].format(case=case_number or "?")
    words = STATUS_WORDS.get(complaint.status.value, (complaint.status.value, complaint.status.value))
    text = (f"案件 {complaint.case_number} 当前状态：{words[0]}。" if zh
            else f"Case {complaint.case_number} is {words[1]}.")
    update = last_public_update(complaint)
    if update:
        snippet = update if len(update) <= 200 else update[:199] + "…"
        text += (f"最近答复：{snippet}" if zh else f" Latest update: {snippet}")
    return text
