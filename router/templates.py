"""What the desk says to customers, in the language they wrote in."""

from __future__ import annotations

ACKNOWLEDGEMENT = {
    "zh": "您好，您的问题已受理，案件编号 {case}。我们会尽快处理并在此回复您。"
    "如需查询进度，请随时发送“进度 {case}”。",
    "en": "Hello, we have received your request. Your case number is {case}. "
    "We will reply here as soon as possible; send \"status {case}\" at any time to see where it stands.",
}


def acknowledgement(case_number: str, language: str) -> str:
    template = ACKNOWLEDGEMENT.get(language, ACKNOWLEDGEMENT["en"])
    return template.format(case=case_number)


REPEAT_ACKNOWLEDGEMENT = {
    "zh": "您好，我们已收到您的补充信息，并已加入您正在处理中的案件 {case}，无需重复提交。"
    "我们会尽快在此回复您；如需查询进度，请发送“进度 {case}”。",
    "en": "Hello, we have added your message to your open case {case}; there is no need to report it "
    "again. We will reply as soon as possible; send \"status {case}\" to see where it stands.",
}


def repeat_acknowledgement(case_number: str, language: str) -> str:
    template = REPEAT_ACKNOWLEDGEMENT.get(language, REPEAT_ACKNOWLEDGEMENT["en"])
    return template.format(case=case_number)
