"""Is this message a formal complaint? Rules that follow shared/corpus/README.md's convention.

True when the customer files a complaint (投诉, 申诉, "I want to make a formal complaint"), asks to
escalate (升级处理, 找你们领导, "escalate", "a supervisor"), or says they are reporting (or have
reported) to a regulator or the press (12315, 人民银行, "the CFPB", "the Ombudsman") - with or
without the word 投诉. Not when the cue is:

- conditional, a threat of what happens otherwise ("如果不能…就去投诉", "再不退我就去12363投诉",
  "I'll report you to the HKMA if this isn't sorted");
- negated ("不是投诉", "I'm not making a formal complaint");
- taken back ("我想投诉 不对 不是投诉" - what follows "不对" / "no wait" counts, what precedes it not);
- about an earlier complaint, a follow-up ("投诉的事怎么样了", "complaint ref?", "the complaint I
  filed last week");
- aimed at a merchant, not at us ("我要投诉商家 不是投诉你们");
- "escalate to your fraud team" (a request to act, not a complaint).

A rule list, not a model: each cue and each exception is a sentence of the convention, so a wrong
answer points at the line to change, and the flag is as good on a channel the training corpus has
little of. Written from our own corpus (data/corpus/), never from shared/corpus/dev.jsonl.
"""

from __future__ import annotations

import re

import msgspec

from normalizer.text import first_char_guard
from router.understanding.textprep import prepare_for_rules


class FormalCue(msgspec.Struct, frozen=True):
    kind: str  # filing | escalation | regulator
    text: str
    verdict: str  # counted | conditional | negated | retracted | reference | merchant | fraud_team | appeal | someone_else


class FormalVerdict(msgspec.Struct, frozen=True):
    formal_complaint: bool
    cues: tuple[FormalCue, ...]

    @property
    def reason(self) -> str:
        counted = [c for c in self.cues if c.verdict == "counted"]
        if counted:
            return f"{counted[0].kind}: {counted[0].text}"
        if self.cues:
            return f"{self.cues[0].verdict}: {self.cues[0].text}"
        return "no cue"


# -- cues -----------------------------------------------------------------------------------

_FILING_ZH = r"投诉|申诉|客诉|告你们"
_FILING_EN = (r"\bcomplaints? (?:department|team|dept|unit)\b|\bcomplain(?:ing|t)?\b|\bformally\b|\bon record\b"
              r"|\bofficial complaint\b")
_ESCALATION_ZH = (r"升级处理|要求升级|给我升级|帮我升级|申请升级|把(?:这个|这件事|我的|这事|这)[^。！？!?]{0,8}升级"
                  r"|(?:找|要|叫|让|请|要求)(?:你们|你们的|你哋|贵司|你们公司)?(?:的)?(?:领导|经理|主管|上级|上司|负责人|老板)"
                  r"|escalate")
_ESCALATION_EN = (r"\bescalat(?:e|ed|ing|ion)\b"
                  r"|\b(?:speak|talk)\s+(?:to|with)\s+(?:a|your|the|someone)\s*(?:senior\s+)?(?:supervisor|manager|someone senior)\b"
                  r"|\b(?:want|need|get me|give me|put me through to)\s+(?:a|your|the)\s+(?:supervisor|manager)\b"
                  r"|\bsomeone senior\b|\bsupervisor\b|\bhigher[ -]up\b")
_REGULATOR_ZH = (r"(?<!\d)(?:12315|12363|12378)(?!\d)|12345热线|打12345|市长热线|一二三一五|一二三六三|幺二三六三|一二三七八|人民银行|央行|金融监管|监管局"
                 r"|监管总局|监管部门|监管机构|(?:向|找|去|到)(?:有关|相关|上级)部门|银保监|银监|证监|消协|消保|银行业协会|消费者协会|消委会|工信部|市场监管|网信办|金管会|金管局|金融管理局|银行公会"
                 r"|曝光|(?:向|找|联系|告诉|打给|上|去)(?:媒体|记者|电视台|报社|新闻)")
_REGULATOR_EN = (r"\bcfpb\b|\bfca\b|\bftc\b|\bfos\b|\bhkma\b|\bmas\b|\bico\b|\bocc\b|\bfinra\b|\bombudsman\b|\bregulators?\b"
                 r"|\battorney general\b|\bconsumer council\b|\btrading standards\b"
                 r"|\bfinancial conduct authority\b|\bdepartment of [a-z]+\b|\bmonetary authority\b|\bcentral bank\b|\bpboc\b"
                 r"|\bfdic\b|\bconsumer protection\b|\bthe authorities\b"
                 r"|\b(?:to|tell|contact|contacting|call|calling)\s+(?:the\s+)?(?:press|media|newspapers?|journalists?|reporters?)\b"
                 r"|\bgo(?:ing)?\s+(?:to\s+)?public\b|\bbbc\b|\bwatchdog\b")

# behind a look-ahead for their first characters (the same matches; the regulators' 0.012 -> 0.003 ms
# a text); not the filing words, whose alternatives all begin with a character the engine skips to
_CUES = [
    ("filing", re.compile(_FILING_ZH)),
    ("filing", re.compile(first_char_guard(_FILING_EN))),
    ("escalation", re.compile(first_char_guard(_ESCALATION_ZH))),
    ("escalation", re.compile(first_char_guard(_ESCALATION_EN))),
    ("regulator", re.compile(first_char_guard(_REGULATOR_ZH))),
    ("regulator", re.compile(first_char_guard(_REGULATOR_EN))),
]

# -- where a cue's scope ends ---------------------------------------------------------------

_SENTENCE_END = re.compile(r"[。！？!?;；\n]+|(?<=[a-z\s])\.(?=\s|$)")
# What follows a self-correction replaces what came before it.
_RETRACT = re.compile(r"不对|不是不是|哦不|no wait|actually no|sorry no|scratch that")
# After the cue, only an unmistakable correction takes it back ("显示不对" is a wrong display).
_RETRACT_AFTER = re.compile(r"^.{0,4}不对|^.{0,12}(?:哦不对|不对不是|不对,不是|不是不是|no wait|sorry no|actually no|scratch that)")
_CONTRAST = re.compile(r"\bbut\b|但是|可是|不过|然而|\bhowever\b")

# -- exceptions -----------------------------------------------------------------------------

# "if" needs its "then" right before the cue ("再不退我就去12363投诉", "如果…我就投诉");
_CONDITION_ZH = re.compile(r"如果|要是|假如|假设|若是|倘若|万一|再不|再这样|再没|还不|的话")
_THEN_ZH = re.compile(r"(?:就|我会|会去|会向|会打|会找|直接|只能|只好|只有)[^。！？!?]{0,10}$")
# "otherwise" needs none, but stands close to it ("不然我去找电视台").
_OTHERWISE_ZH = re.compile(r"(?:不然|否则|要不然|要不)[^。！？!?]{0,8}$")
# "now" / "already" right before the cue: it is happening, not threatened ("现在就正式投诉").
_HAPPENING = re.compile(r"(?:现在|马上|立刻|今天|已经|已|正式|\bnow\b|\balready\b|\bi've\b|\bi have\b)[^。！？!?]{0,5}$")
_CONDITION_EN = re.compile(r"\bif\b|\bunless\b|\botherwise\b|\bor else\b|\bor i\b")
# Not done, only thought of: "I'm considering filing a complaint", "可能会投诉".
_HEDGE = re.compile(r"\b(?:considering|thinking (?:about|of)|might|may|could)\b(?:\s+\S+){0,3}\s*$|(?:考虑|可能会|或许会|说不定)[^。！？!?]{0,4}$")
_FUTURE_EN = re.compile(r"\b(?:i'll|i will|i'm going to|i am going to|im going to|i'd have to|i shall|i would|gonna"
                        r"|will be|we'll|we will|i may|i might|next step is)\b(?:\s+\S+){0,8}\s*$")
_NEGATION_ZH = re.compile(r"(?:不是|不算|并非|并不是|没有要|没打算|不打算|不想|不会|不要|不用)[^。！？!?]{0,3}$")
_NEGATION_ZH_TIGHT = re.compile(r"不$")
# The negation must govern the cue ("not a complaint", "don't want to file a complaint"): only words of
# that phrase may stand between, so "no refund yet, please escalate" stays an escalation.
_NEGATION_EN = re.compile(r"\b(?:not|never|no|don't|dont|won't|wont|isn't|isnt|aren't|didn't|didnt|do not|does not)"
                          r"(?:\s+(?:a|an|to|trying|try|want|wanting|wanna|going|gonna|making|make|filing|file|lodge|"
                          r"lodging|raise|raising|this|it|is|as|formal|formally|official|officially|asking|looking|"
                          r"calling|really|here|just|i|am|i'm|for|you|guys|about|yet|any|anything|intending|planning|"
                          r"need|needing|be|being|writing|reporting|register|registering|log|logging|submit|submitting))*"
                          r"\s*$")
# "my case was escalated last week": the escalation exists already.
_ESCALATED_ALREADY = re.compile(r"\b(?:was|been|is being|got|already|were)\s*$")
# The complaint already exists: the customer asks about it, not files it.
_REFERENCE_ZH_AFTER = re.compile(r"^(?:单号|单|的事|的那|的工单|工单|进度|电话|号|编号|结果|过|过了|了吗|了没|的结果|的进度|的|那个)")
# ...unless this message opens it: "给我开个投诉单", "登记投诉"
_OPENS_ZH = re.compile(r"(?:开|建|提|立|登记|记|给我)[^。！？!?]{0,2}$")
_REFERENCE_ZH_BEFORE = re.compile(r"(?:那个|上次|之前|前几天|已经|电话里|早就|之前的|上次的|那笔)[^。！？!?]{0,2}$|的$")
# Other people complain ("已有用户投诉"): the sender reports it, does not file it.
_SOMEONE_ELSE = re.compile(r"(?:用户|客户|顾客|消费者|别人|有人|他们|很多人|不少人)(?:也|都|在|一直|纷纷|已经|已|又)?$")
_REFERENCE_EN_BEFORE = re.compile(r"\b(?:my|the|that|this|your|our|previous|earlier|last|existing|open)\s+(?:\w+\s+){0,2}$"
                                  r"|\b(?:filed|made|lodged|raised|logged|registered|submitted|sent)\s+(?:a\s+|my\s+)?(?:formal\s+)?$")
_REFERENCE_EN_AFTER = re.compile(r"^\s*(?:-\s*)?(?:(?:any|the|a|my)\s+)?(?:ref|reference|number|no\.?|id|status|i filed|i made|i raised|i lodged|i sent"
                                 r"|filed|was|is still|hasn't|has not)\b")
_FILING_EN_BEFORE = re.compile(r"\b(?:make|making|file|filing|lodge|lodging|raise|raising|register|registering|log|logging|"
                               r"submit|submitting|want|wish|formal|official|as a|this is a|this is now a|consider this a|"
                               r"have a|got a|another|new|second|serious|"
                               r"treat this as a|put in a|now a)\s+(?:\w+\s+){0,1}$")
_MERCHANT_TARGET = re.compile(r"^(?:这家|那家|这个|那个|这间|呢间|那间)?(?:商家|商户|卖家|店|店家|商店|健身房|骑手|快递|外卖|司机)")
_US = re.compile(r"你们|贵司|平台|客服|贵公司")
_NOT_US = re.compile(r"不是(?:投诉|针对|说)?(?:你们|平台|贵司)|\bnot (?:about )?you\b")
_ALSO_US = re.compile(r"^.{0,10}(?:和|跟|同埋|同|及|以及|还有|也|连同)(?:你们|平台|贵司)")
# 申诉 of a restricted or frozen account is the unfreezing procedure, not a complaint.
_RESTRICTION_APPEAL = re.compile(r"限制|冻结|封号|解封|风控|材料|解冻")
_FRAUD_TEAM = re.compile(r"^\s*(?:this\s+|it\s+)?(?:to|with)\s+(?:your|the)\s+(?:fraud|security|anti-fraud|disputes?|"
                         r"chargeback|risk|claims)\s*(?:team|department|people|unit|guys|dept)?")


def _clauses(text: str) -> list[str]:
    clauses: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if sentence.strip():
            clauses.append(sentence)
    return clauses


def _judge(kind: str, clause: str, start: int, end: int) -> str:
    before, cue, after = clause[:start], clause[start:end], clause[end:]
    # A self-correction after the cue takes it back; one before it only ends the earlier thought.
    retract = list(_RETRACT.finditer(before))
    if retract:
        before = before[retract[-1].end():]
    if _RETRACT_AFTER.search(after):
        return "retracted"
    contrast = list(_CONTRAST.finditer(before))
    if contrast:
        before = before[contrast[-1].end():]
    is_en = bool(re.search(r"[a-z]", cue))
    if kind == "escalation" and is_en and _FRAUD_TEAM.match(after):
        return "fraud_team"
    if kind == "escalation" and is_en and cue.startswith("escalat") and _ESCALATED_ALREADY.search(before):
        return "reference"
    if _NEGATION_EN.search(before) or _NEGATION_ZH.search(before) or _NEGATION_ZH_TIGHT.search(before):
        return "negated"
    if _HEDGE.search(before):
        return "conditional"
    if not _HAPPENING.search(before):
        if _CONDITION_EN.search(clause) and _FUTURE_EN.search(before):
            return "conditional"
        cond = list(_CONDITION_ZH.finditer(before))
        if cond and _THEN_ZH.search(before[cond[-1].end():]):
            return "conditional"
        if _OTHERWISE_ZH.search(before):
            return "conditional"
    if kind == "filing" and cue == "申诉" and _RESTRICTION_APPEAL.search(clause):
        return "appeal"
    if kind == "filing":
        if is_en:
            if cue.startswith("complaint") and " " not in cue:
                # "complaint": a filing only when something files it, else it names an existing one
                if _REFERENCE_EN_AFTER.match(after):
                    return "reference"
                # "Complaint about ..." opening a clause (a mail's subject) files one; mid-sentence,
                # without a verb that files it, it names one that exists ("my complaint from Tuesday")
                if not _FILING_EN_BEFORE.search(before) and before.strip():
                    return "reference"
            if cue == "complained":
                return "reference"
        else:
            if _REFERENCE_ZH_AFTER.match(after) and not re.match(r"^的(?:话)", after) and not _OPENS_ZH.search(before) \
                    and not _US.match(after) and not re.search(r"(?:要|想|必须|正式|我|现在)$", before):
                return "reference"
            if _REFERENCE_ZH_BEFORE.search(before) and not re.search(r"(?:要|想|正式)[^。！？!?]{0,2}$", before):
                return "reference"
            if _MERCHANT_TARGET.match(after) and _NOT_US.search(clause) and not _ALSO_US.match(after):
                return "merchant"
            if _SOMEONE_ELSE.search(before):
                return "someone_else"
    return "counted"


_NO_CUE = FormalVerdict(False, ())


def formal_verdict(text: str) -> FormalVerdict:
    """The flag with the cues that decided it (for the evaluation report and for agents)."""
    folded = prepare_for_rules(text)
    # Most messages name no cue at all: one search per cue pattern over the whole text says so
    # (~4x less than per clause). A clause is a piece of the text cut at sentence ends, none of
    # them a letter or a digit, so a cue found in a clause is found in the text too: the same
    # answer.
    if not any(pattern.search(folded) for _, pattern in _CUES):
        return _NO_CUE
    return _verdict(folded)


def _verdict(folded: str) -> FormalVerdict:
    clauses = _clauses(folded)
    cues: list[FormalCue] = []
    for clause in clauses:
        found: list[tuple[int, int, str]] = []
        for kind, pattern in _CUES:
            for m in pattern.finditer(clause):
                if not any(a < m.end() and m.start() < b for a, b, _ in found):
                    found.append((m.start(), m.end(), kind))
        found.sort()
        previous: tuple[int, str] | None = None  # (end, verdict) of the cue before
        for start, end, kind in found:
            # cues a few characters apart are one phrase ("去12363投诉", "escalate ... formal complaint"
            # excepted): the first one's verdict holds for the rest
            if previous is not None and start - previous[0] <= 3 and previous[1] != "counted":
                verdict = previous[1]
            else:
                verdict = _judge(kind, clause, start, end)
            cues.append(FormalCue(kind, clause[start:end], verdict))
            previous = (end, verdict)
    formal = any(c.verdict == "counted" for c in cues)
    return FormalVerdict(formal, tuple(cues))


def is_formal_complaint(text: str) -> bool:
    return formal_verdict(text).formal_complaint


__all__ = ["FormalCue", "FormalVerdict", "formal_verdict", "is_formal_complaint"]
