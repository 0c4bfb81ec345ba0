"""What the desk says to customers, in the language they wrote in.

Supervisors may replace any template (``GET, PUT /v1/templates``); the replacements live in
Redis (``Keys.templates``: ``<prefix>templates``, field ``<name>.<lang>``) and every process reads them within a
second. A template keeps its placeholders: ``{case}`` everywhere it appears in the default,
``{reason}`` in the rejection, and the named fields of the appeal templates (``PLACEHOLDERS``:
``{state}`` and ``{next}`` in a progress update, ``{items}`` in a materials request, ``{amount}``,
``{method}`` and ``{expected}`` in a refund notice).
"""

from __future__ import annotations

import asyncio
from typing import Any

from normalizer.language import desk_language
from router.cached_read import CachedRead
from router.store.keys import Keys

DEFAULTS: dict[str, dict[str, str]] = {
    "ack": {
        "zh": "您好，您的问题已受理，案件编号 {case}。我们会尽快处理并在此回复您。如需查询进度，请随时发送“进度 {case}”。",
        "en": "Hello, we have received your request. Your case number is {case}. We will reply here as soon as "
              "possible; send \"status {case}\" at any time to see where it stands.",
    },
    "repeat_ack": {
        "zh": "您好，我们已收到您的补充信息，并已加入您正在处理中的案件 {case}，无需重复提交。"
              "我们会尽快在此回复您；如需查询进度，请发送“进度 {case}”。",
        "en": "Hello, we have added your message to your open case {case}; there is no need to report it again. "
              "We will reply as soon as possible; send \"status {case}\" to see where it stands.",
    },
    "outcome_upheld": {
        "zh": "您的案件 {case} 已处理完毕：您的申诉成立，我们已按您的要求处理。{reason}",
        "en": "Your case {case} is resolved: your complaint was upheld and we have put it right. {reason}",
    },
    "outcome_partly_upheld": {
        "zh": "您的案件 {case} 已处理完毕：您的申诉部分成立。{reason}",
        "en": "Your case {case} is resolved: your complaint was partly upheld. {reason}",
    },
    "outcome_rejected": {
        "zh": "您的案件 {case} 已处理完毕：很抱歉，您的申诉未能成立。原因：{reason}"
              "如您对处理结果有异议，可回复本消息申请复核，或向中国人民银行金融消费权益保护部门（12363）"
              "或当地金融监管部门投诉，亦可依法申请仲裁或提起诉讼。",
        "en": "Your case {case} is resolved: we are sorry, but your complaint was not upheld. Reason: {reason} "
              "If you disagree, reply to this message to ask for a review, or complain to the People's Bank of "
              "China consumer protection line (12363) or your local financial regulator; arbitration and the "
              "courts also remain open to you.",
    },
    "outcome_answered": {
        "zh": "您的案件 {case} 已处理完毕。{reason}",
        "en": "Your case {case} is resolved. {reason}",
    },
    "survey": {
        "zh": "请为本次服务打分：回复 1 到 5 的数字（5 = 非常满意，1 = 非常不满意）。如问题仍未解决，直接回复说明即可重新打开案件 {case}。",
        "en": "How did we do? Reply with a number from 1 to 5 (5 = very satisfied, 1 = very dissatisfied). "
              "If the problem is not solved, just reply and we will reopen case {case}.",
    },
    "survey_thanks": {
        "zh": "感谢您的评价！",
        "en": "Thank you for your feedback!",
    },
    "reopened": {
        "zh": "您的案件 {case} 已重新打开，我们会尽快跟进。",
        "en": "Your case {case} has been reopened; we will follow up as soon as possible.",
    },
    "progress_update": {
        "zh": "案件 {case} 进展：{state}。下一步：{next}如需查询进度，请随时发送“进度 {case}”。",
        "en": "Update on case {case}: {state}. Next: {next} Send \"status {case}\" at any time to see where it stands.",
    },
    "materials_request": {
        "zh": "为处理您的案件 {case}，请提供以下材料：{items}。可直接在此回复发送图片或文件，"
              "也可通过其他渠道发送并注明案件编号 {case}。收到前处理时限暂停计算。",
        "en": "To handle your case {case}, please send us: {items}. You can reply here with pictures or files, "
              "or send them on any other channel quoting case {case}. The case waits for them.",
    },
    "materials_reminder": {
        "zh": "提醒：您的案件 {case} 仍在等待以下材料：{items}。收到后我们会立即继续处理。",
        "en": "A reminder: your case {case} is still waiting for: {items}. We will carry on as soon as they arrive.",
    },
    "materials_received": {
        "zh": "已收到您为案件 {case} 提供的材料：{items}。{next}",
        "en": "We have received the materials for case {case}: {items}. {next}",
    },
    "outcome_refund": {
        "zh": "您的案件 {case} 已处理完毕：我们将向您退款 {amount}，方式：{method}，预计{expected}到账。{reason}",
        "en": "Your case {case} is resolved: we are refunding {amount} {method}; expect it {expected}. {reason}",
    },
    "outcome_compensation": {
        "zh": "您的案件 {case} 已处理完毕：我们将向您补偿 {amount}，方式：{method}，预计{expected}到账。{reason}",
        "en": "Your case {case} is resolved: we are compensating you {amount} {method}; expect it {expected}. {reason}",
    },
}
REQUIRED = {name: {"{case}"} for name, texts in DEFAULTS.items() if "{case}" in texts["en"]}
REQUIRED["outcome_rejected"] = {"{case}", "{reason}"}
#: The named fields each template may use beyond ``{case}`` and ``{reason}``.
PLACEHOLDERS: dict[str, set[str]] = {
    "progress_update": {"state", "next"},
    "materials_request": {"items"},
    "materials_reminder": {"items"},
    "materials_received": {"items", "next"},
    "outcome_refund": {"amount", "method", "expected"},
    "outcome_compensation": {"amount", "method", "expected"},
}
LANGS = ("zh", "en")


class TemplateError(ValueError):
    pass


def validate(name: str, lang: str, text: str) -> None:
    if name not in DEFAULTS:
        raise TemplateError(f"unknown template {name!r} (one of {', '.join(sorted(DEFAULTS))})")
    if lang not in LANGS:
        raise TemplateError(f"{name}: unknown language {lang!r} (zh or en)")
    if not text.strip() or len(text) > 2000:
        raise TemplateError(f"{name}.{lang}: 1..2000 characters")
    missing = [p for p in REQUIRED.get(name, ()) if p not in text]
    if missing:
        raise TemplateError(f"{name}.{lang}: must keep {', '.join(missing)}")
    allowed = ["case", "reason", *sorted(PLACEHOLDERS.get(name, ()))]
    try:
        text.format(**{field: "x" for field in allowed})
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join("{" + field + "}" for field in allowed)
        raise TemplateError(f"{name}.{lang}: only {names} may be used ({exc})") from None


_overrides: dict[str, str] = {}
_reads: CachedRead[dict[str, str]] = CachedRead(lambda: asyncio.sleep(0, {}), 1.0)


async def refresh(redis: Any, keys: Keys | str, *, force: bool = False) -> None:
    """Re-read supervisors' replacements (at most once a second unless forced; the jobs that find
    it due at the same time share one read). ``keys``: the store's ``Keys``, or the key prefix they
    are for."""
    global _overrides
    key = Keys.of(keys).templates

    async def read() -> dict[str, str]:
        raw = await redis.hgetall(key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    _reads.read = read
    await _reads.get(force=force)
    _overrides = _reads.value or {}


def text_of(name: str, language: str) -> str:
    lang = desk_language(language)
    return _overrides.get(f"{name}.{lang}") or DEFAULTS[name][lang]


def render(name: str, language: str, case: str, reason: str = "", **fields: str) -> str:
    """``name`` in ``language`` with its placeholders filled (a field not given is left empty)."""
    values = {field: "" for field in PLACEHOLDERS.get(name, ())}
    values.update(fields)
    return text_of(name, language).format(case=case, reason=reason, **values).strip()


def acknowledgement(case_number: str, language: str) -> str:
    return render("ack", language, case_number)


def repeat_acknowledgement(case_number: str, language: str) -> str:
    return render("repeat_ack", language, case_number)


def all_templates() -> dict[str, dict[str, dict[str, Any]]]:
    return {name: {lang: {"text": text_of(name, lang), "default": DEFAULTS[name][lang],
                          "customised": f"{name}.{lang}" in _overrides} for lang in LANGS} for name in DEFAULTS}
