"""What a message says about being a repeat report, in Chinese (simplified, traditional,
Cantonese) and English: follow-up cues ("any update?", "还没处理", "third time asking"), cues that
it is a new problem ("different order this time", "跟上次那笔不是同一笔"), and the topic terms two
descriptions of one problem share ("top-up not credited" ~ "充值没到账").

Topic terms are concepts (a term and its synonyms in both languages folded to one token, e.g.
``<topup>``), the English content words (stemmed roughly) and the Chinese character pairs of a
text, without the words every complaint uses ("please", "你们", "help"). Two texts are compared
by how many terms they share (``overlap``).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from normalizer.text import TEXT_MEMO, first_char_guard, guarded_alternation

# traditional characters customers write, to the simplified ones the concepts use
_TRAD = str.maketrans(dict(zip(
    "帳賬戶號碼錢轉額費錯誤還處理應開關閉裝機電話單據訂餘帶後條張紙複雜設備鎖凍結盜問題聯繫繳聽說讓這個們麼為從網頁載錄證識別驗"
    "臺灣圖買賣筆貨發認過時間點擊覆嘅咗喺冇嗰唔係佢睇畀俾嚟搵仲兩無與遞閃進現",
    "帐账户号码钱转额费错误还处理应开关闭装机电话单据订余带后条张纸复杂设备锁冻结盗问题联系缴听说让这个们么为从网页载录证识别验"
    "台湾图买卖笔货发认过时间点击复的了在没那不是他看给给来找还两无与递闪进现",
)))
_CJK_GAP = re.compile(r"(?<=[\u3400-\u9fff])[ \t\u3000]+(?=[\u3400-\u9fff])")


@lru_cache(maxsize=TEXT_MEMO)  # one message's text is folded for each cue and for its terms
def _fold(text: str) -> str:
    """Width, case and traditional characters folded; the spaces voice transcripts put between
    Chinese characters ("被 人 冒 用") removed."""
    return _CJK_GAP.sub("", unicodedata.normalize("NFKC", text).casefold().translate(_TRAD))


# -- follow-up and new-problem cues ------------------------------------------------------------------

_FOLLOW_UP_EN = (
    r"any (?:update|news|progress|word|reply|response|fix)", r"still (?:waiting|not|no|nothing|can'?t|cannot|haven'?t|"
    r"hasn'?t|locked|frozen|missing|stuck|unable|won'?t|doesn'?t|don'?t|didn'?t|isn'?t|broken|being charged|"
    r"being billed)",
    r"follow(?:ing)?[- ]?up", r"re(?::| the | my )", r"regarding (?:my|the)", r"about (?:my|the) (?:earlier|previous)",
    r"(?:second|third|fourth|2nd|3rd|4th|\d+(?:st|nd|rd|th)) (?:time|message|msg|call|attempt)",
    r"(?:two|three|four|several|many) times", r"hello\s*\?\?", r"hello\?{2,}", r"anyone there", r"anybody there",
    r"(?:nobody|no one|no-one|noone)(?: has)? (?:(?:got|came|come|gotten) back|replied|answered|called|rang|responded|"
    r"contacted|helped)", r"no (?:reply|response|answer|callback|call back)", r"heard (?:anything )?back",
    r"where are we", r"what'?s (?:happening|going on) with", r"(?:i|we) (?:already )?(?:texted|called|messaged|"
    r"emailed|wrote|reported|rang|raised|asked|told|sent (?:a|you))", r"(?:called|texted|messaged|asked|told you|"
    r"reported) (?:already|before|earlier|yesterday|twice|last week|this morning)", r"as i (?:said|mentioned)",
    r"same (?:issue|problem|question|thing|error|as)", r"(?:my|the) (?:earlier|previous|last|original) (?:message|"
    r"complaint|call|text|email|report|case)", r"(?:it'?s|this is) me again", r"hi again", r"me again",
    r"update on", r"status of", r"since i (?:reported|texted|called|wrote|asked|messaged)", r"nobody'?s",
    r"is anybody", r"(?:from|on) (?:whatsapp|messenger|telegram|wechat|"
    r"the phone|my call|the call|sms|text|email)", r"my (?:call|complaint|text|message) (?:this|from|on|about|re)",
    r"(?:done|did) nothing", r"sent it", r"(?:a|one|two|\d+) (?:days?|weeks?|"
    r"months?) ago", r"the complaint i (?:filed|made|raised|logged)",
)
_FOLLOW_UP_ZH = (
    r"还没", r"还是没", r"还未", r"怎么还", r"咋还", r"到现在", r"至今", r"仍然", r"依然", r"还在", r"还是不", r"还是一样",
    r"上次(?:说|问|发|打|反映|提|讲|联系|投诉|那|的|跟)", r"(?:之前|前几天|前天|刚才|刚刚|昨天|早上|上周|上礼拜|前面)"
    r"(?:已经|就)?(?:说|问|发|打|反映|提|讲|联系|投诉|让|电话|text|call)",
    r"(?:反映|说|问|发|打|提|投诉|讲|联系)过(?!来|去|期|程|滤)",
    r"第[二三四五六2-6]次", r"第[二三四五2-5]回", r"[两三四五2-5]次了", r"再问", r"跟进", r"進度", r"进度", r"进展",
    r"有结果", r"处理(?:了没|到哪|得怎么样|好了没|了吗|没有)", r"有没有人", r"有人管", r"没人(?:回|理|管|联系|处理|跟)",
    r"没有人(?:回|理|管|联系)", r"没回复", r"没答复", r"回个话", r"回复一下", r"都\S{1,3}天了", r"几天了", r"多少天",
    r"好了吗", r"好了没", r"了没(?:有)?(?:[?？吗呢啊]|$)", r"那个(?:问题|事|事情)", r"那(?:件|个)?事", r"^\S{1,10}的事", r"那笔",
    r"仲未", r"仲喺", r"到而家", r"幾時", r"有冇人", r"上次問", r"跟進", r"還沒", r"還是沒", r"怎麼還",
    r"嗰筆", r"嗰單", r"电话里", r"那家", r"那张", r"那\S?笔", r"还是(?:没|不|\S{1,3}不|这样)", r"没动静", r"要结果",
    r"给个说法", r"现在还", r"早就(?:交|发|说|提|打)", r"又是我", r"有\s*(?:update|进展|进度|消息|结果)\s*(?:吗|没)",
    r"(?:发|打)(?:了|过)(?:短信|电话|信息|消息|邮件)", r"(?:短信|电话|信息|消息|邮件)也(?:发|打)(?:了|过)",
    r"那(?:个|件|笔)(?:事|问题)?(?:后来|现在|还|怎么|到底|有没有|有结果|呢|case|处理|进展|搞定|已经)",
)
_NEW_PROBLEM_EN = (
    r"(?:different|diff|separate|unrelated) (?:issue|problem|question|q|one|thing|"
    r"payment|order|merchant|fee|charge|shop|store|transaction|txn|refund|return|top[- ]?up|double charge|transfer|"
    r"subscription|seller|buyer|bill|card|account|fault)", r"(?:new|other) (?:issue|problem|question|q|thing|fault)",
    r"another (?:issue|problem|question|q|thing|"
    r"payment|order|merchant|fee|charge|shop|store|transaction|txn|refund|return|top[- ]?up|double charge|transfer|"
    r"subscription|seller|buyer|bill|card|account|fault)", r"\bdifferent (?:from|than|to) (?:the|my|before|earlier)",
    r"different now", r"different this time", r"now (?:a )?different", r"not (?:the|about the|related to the|about my) "
    r"\w+(?:[ -]\w+){0,3} (?:one|thing|issue|problem|case|charge|order)", r"(?:separate|unrelated) (?:from|to)",
    r"not (?:the same|related)", r"(?:this|that) is a new", r"a new (?:one|problem|issue)", r"new problem",
    r"(?:is|was|got) (?:fixed|resolved|sorted|solved)(?: now)?[,.!]? (?:but|now)",
    r"(?:(?:that|it|this)'?s|is|are) (?:actually |all )?(?:fine|ok|okay|sorted|working) now", r"(?<!not )works now",
    r"thanks?,? (?:but )?now (?:i|my|the|it|there)", r"something else", r"one more (?:thing|question|issue)",
    r"(?:not|isn'?t|wasn'?t) (?:the|that) (?:same|one)", r"separate q", r"(?:this|that|one) too\b",
)
_NEW_PROBLEM_ZH = (
    r"另外", r"另一", r"另個", r"另一個", r"还有一笔", r"還有一筆", r"还有个", r"还有一个", r"又一个", r"又一笔", r"又一個",
    r"不是同一", r"唔係同一", r"不是一回事", r"两回事", r"兩回事", r"不是一笔", r"新问题", r"新的问题",
    r"(?:跟|和|与|同)\S{0,4}(?:上次|之前|那|昨天|刚才|前面|上面|上一|嗰|早前)\S{0,10}(?:不一样|不一樣|不同|唔同|无关|無關|没关系|沒關係)",
    r"这次(?:是|不是)(?!第)", r"這次(?:是|不是)(?!第)", r"这回(?:是|不是)(?!第)", r"今次(?:係|唔係)(?!第)",
    r"不是那个", r"不是那個", r"唔係嗰", r"不是(?!投诉)\S{1,6}那(?:个|笔|单|张|次)", r"再问一个", r"另一个问题",
    r"不是一个问题", r"不是同一个", r"^\s*还有[\s,，]", r"分开",
    r"(?:弄好了|解决了|解了|修好了|找到了|查到了|免了)[^。.!！?？]{0,8}(?:现在|但是|不过|还有|又|这次|这回)",
    r"(?:退了|好了)[^。.!！?？]{0,8}(?:现在是|这次是|这回是|还有个|另)", r"现在(?:我)?(?:想|要)问",
)
def _pattern(english: tuple[str, ...], chinese: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for the cues (the Chinese ones in the characters ``_fold`` leaves; the English
    ones as whole words), behind look-aheads for the characters a cue can begin with (the same
    matches; ~0.19 -> ~0.06 ms per text for both cues)."""
    cues = [rf"(?<![a-z])(?:{p})" for p in english] + [p.translate(_TRAD) for p in chinese]
    return re.compile(guarded_alternation(cues, re.IGNORECASE), re.IGNORECASE)


_FOLLOW_UP = _pattern(_FOLLOW_UP_EN, _FOLLOW_UP_ZH)
_NEW_PROBLEM = _pattern(_NEW_PROBLEM_EN, _NEW_PROBLEM_ZH)


def follow_up_cue(text: str) -> str:
    """The words that make ``text`` a follow-up on something said before ("" when none)."""
    m = _FOLLOW_UP.search(_fold(text))
    return m.group(0) if m else ""


def new_problem_cue(text: str) -> str:
    """The words that say ``text`` is about another problem than before ("" when none)."""
    m = _NEW_PROBLEM.search(_fold(text))
    return m.group(0) if m else ""


# -- topic terms ---------------------------------------------------------------------------------------

CONCEPTS: dict[str, tuple[str, ...]] = {
    "<crash>": ("闪退", "崩溃", "crash", "crashes", "crashed", "crashing", "crushes", "彈返出", "弹返出", "开不了",
                "打不开", "开唔到", "won't open", "wont open", "can't open", "doesn't open", "won't load", "won't launch",
                "closes", "白屏", "黑屏", "white screen", "blank", "black screen", "black box", "freezes", "freezing",
                "卡死", "死机"),
    "<login>": ("登录", "登陆", "登入", "登不上", "log in", "login", "logging in", "sign in", "logged out", "log out",
                "logging me out", "logouts", "signing me out", "signed out", "sign-out", "signs me out", "登出"),
    "<freeze>": ("冻结", "冻住", "冻着", "冻了", "解冻", "frozen", "freeze", "locked", "lock", "锁定", "锁了", "限制", "受限",
                 "restricted", "restriction", "block", "blocked", "suspended", "unfreeze", "locked out"),
    "<hacked>": ("被盗", "盗刷", "盗转", "盗用", "被人", "hacked", "hack", "stolen", "stole", "fraud", "scam", "骗", "冒充",
                 "unauthorised", "unauthorized", "didn't make", "did not make", "didn't authorize", "never made",
                 "taken over", "takeover",
                 "碌咗", "俾人"),
    "<phone_lost>": ("手机丢", "手机被偷", "phone was stolen", "phone stolen", "stolen phone", "lost my phone", "lost phone",
                     "phone is lost", "丢了"),
    "<code>": ("验证码", "otp", "verification code", "sms code", "2fa", "two factor", "codes"),
    "<password>": ("密码", "password", "pwd", "pin", "passcode"),
    "<refund>": ("退款", "退钱", "退回", "退一笔", "refund", "refunded", "reversed", "reversal", "退返", "退咗", "退我",
                 "原路返回", "money back", "give back"),
    "<double>": ("两次", "两回", "两笔", "重复扣", "扣了两", "扣咗两", "twice", "double", "duplicate", "dup", "x2", "2 x",
                 "两遍", "多扣", "charged again"),
    "<deducted>": ("扣了", "扣款", "扣钱", "扣咗", "钱扣", "debited", "deducted", "charged", "taken", "took", "billed",
                   "left my account"),
    "<not_arrived>": ("没到", "没收到", "未到", "未收到", "未入", "冇收到", "收唔到", "未有", "没进", "没有到账", "不到账",
                      "hasn't arrived", "not arrived", "never arrived", "not received", "never received",
                      "didn't receive",
                      "hasn't received", "never got", "not in", "still not in", "hasn't come", "not credited",
                      "didn't get", "hasn't got", "no incoming", "haven't received", "missing"),
    "<failed>": ("失败", "不成功", "付不了", "付不出", "转不出", "交不了", "failed", "fails", "failing", "fail", "declined",
                 "decline", "bounced", "rejected", "被拒", "拒绝", "not permitted", "do not honor", "error", "错误", "报错",
                 "returned", "不能付"),
    "<transfer>": ("转账", "转给", "转了", "汇款", "transfer", "transferred", "sent", "send", "转数快", "fps", "paynow",
                   "转钱"),
    "<wrong_payee>": ("转错", "付错", "wrong person", "wrong account", "wrong number", "mistake", "误付", "错人"),
    "<topup>": ("充值", "充了", "增值", "top up", "top-up", "topup", "topped up", "topping up", "loaded", "充钱"),
    "<withdraw>": ("提现", "提了", "取现", "withdraw", "withdrawal", "withdrawing", "cash out", "cash-out", "cashout",
                   "出金", "提款", "took out"),
    "<fee>": ("手续费", "服务费", "费用", "收费", "fee", "fees", "service charge", "charge me", "commission", "markup",
              "年费", "会员费", "月费"),
    "<fx>": ("汇率", "换汇", "fx", "exchange rate", "conversion", "converting", "foreign", "境外", "跨境", "海外",
             "overseas", "cross-border", "international"),
    "<balance>": ("余额", "零钱", "balance", "bal", "available", "可用", "钱包里", "wallet shows"),
    "<statement>": ("账单", "月结单", "对账单", "statement", "statements", "交易记录", "history", "records", "record"),
    "<invoice>": ("发票", "invoice", "receipt", "收据"),
    "<merchant>": ("商家", "商户", "卖家", "merchant", "seller", "store", "shop", "vendor", "商店"),
    "<dispute>": ("争议", "申诉", "dispute", "chargeback", "appeal", "claim"),
    "<limit>": ("限额", "上限", "limit", "exceeded"),
    "<verify>": ("实名", "认证", "验证", "verify", "verification", "kyc", "identity", "身份证", "id photo", "re-verify"),
    "<update>": ("更新", "升级", "update", "updated", "upgrade", "version", "版本", "新版"),
    "<loading>": ("转圈", "加载", "loading", "spins", "spinning", "processing", "in progress", "待收款", "待入账", "pending",
                  "处理中"),
    "<notification>": ("通知", "提醒", "notification", "notifications", "notifs", "alerts", "push"),
    "<scan>": ("扫码", "扫一扫", "付款码", "收款码", "二维码", "乘车码", "qr", "scan", "scanner", "scanning"),
    "<biometric>": ("指纹", "面容", "生物识别", "fingerprint", "face id", "biometric"),
    "<nfc>": ("nfc", "tap to pay", "碰一碰"),
    "<promo>": ("营销", "推销", "广告", "promo", "promos", "marketing", "spam", "loan offer"),
    "<close>": ("注销", "销户", "close my account", "closing", "delete my account", "cancel my account"),
    "<subscription>": ("订阅", "会员", "自动扣", "续费", "subscription", "membership", "premium", "plan", "auto-renew",
                       "autopay", "recurring", "monthly"),
    "<rent>": ("房租", "房东", "交租", "业主", "業主", "rent", "landlord"),
    "<salary>": ("工资", "薪水", "出糧", "出粮", "salary", "payroll", "wages"),
    "<card>": ("银行卡", "信用卡", "卡号", "绑卡", "card", "cards"),
    "<repay>": ("还款", "repayment", "repay", "credit card bill"),
    "<utility>": ("电费", "水费", "燃气", "煤气", "话费", "缴费", "電費", "electricity", "water bill", "gas bill",
                  "phone bill", "utility", "utilities"),
    "<interest>": ("利息", "收益", "interest", "yield"),
    "<device>": ("新设备", "异地", "设备", "device", "location", "new phone", "another phone"),
    "<email_change>": ("改了邮箱", "email was changed", "changed my email", "email changed", "email on the account"),
}
_CANON = {_fold(t): c for c, ts in CONCEPTS.items() for t in ts}


def _trie(words: list[str], boundary: str = "") -> str:
    """One pattern matching any of ``words``, the longest that fits first, as a tree of their
    shared beginnings (an alternation of 440 words tried one by one at every position of a
    text took most of a message's topic-term time); ``boundary``: what must hold after a word."""
    tree: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def pattern(node: dict) -> str:  # type: ignore[type-arg]
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            branches.append(boundary)  # the word ends here: tried after every longer one
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return pattern(tree)


# English terms as whole words ("fee" is not in "coffee", "rent" not in "different"); a term starting
# with a Latin letter is all Latin letters (so each position can match terms of one kind only)
assert all(t.isascii() for t in _CANON if t[:1].isascii())
# each half behind a look-ahead for its words' first characters (the same matches, 4x sooner)
_CONCEPT_RE = re.compile(first_char_guard(rf"(?<![a-z]){_trie([t for t in _CANON if t.isascii()], '(?![a-z])')}")
                         + "|" + first_char_guard(_trie([t for t in _CANON if not t.isascii()])))
#: concepts nearly every complaint of a kind names: sharing one says little about the problem
GENERIC = frozenset({"<deducted>", "<transfer>", "<failed>", "<card>", "<fee>", "<balance>", "<update>", "<merchant>",
                     "<statement>", "<not_arrived>"})

STOP_EN = frozenset(
    "a an the i i'm im my me mine it its it's is was were be been being am are to on in at of and or but so when while "
    "after before again please pls plz help this that these those every time keeps keep just with for from by as "
    "hi hello hey hiya yes yeah yo um uh like ok okay oh thanks thank thx you your you're we our us they them their "
    "he she his her have has had do does did don't didn't can can't cannot could would should will won't not no "
    "what whats what's why how where who which any anything some something there here now today yesterday still "
    "already also too very really so up out about into over then than than if because cause want wanted need needs "
    "get got getting go going went know see saw look looking said says say tell told call called calling text texted "
    "message messaged msg sent send asked ask asking reply replied back anyone nobody someone update updates news "
    "day days week weeks hours morning night last first second third time times one two three agent caller guys "
    "lah leh ah la wah lor pls sir madam team support customer service app".split())
STOP_ZH = frozenset("你好 你们 我们 我的 一下 什么 怎么 为什么 这个 那个 就是 然后 但是 还是 现在 已经 可以 没有 不是 一直 "
                    "今天 昨天 问一 问下 想问 请问 帮我 一个 这次 上次 之前 到底 到现在 是不 是我 我想 了 的 是 "
                    "在吗 嗯 喂 那 个 呃 客户 坐席 您好 语音 转文字 还没 处理 怎么 回事 时候 多久 谢谢 麻烦 还有 "
                    "的事 事情 问题 一次 两次 几天 好几".split())
_CJK_STOP_CHARS = set("的了吗呢吧啊呀哦嘛么是我你他她它们在有就都也还又很太这那个一不没么着过给让被把跟和与及或"
                      "啦喇咩嘅咗啲喺冇嗰乜嘢唔係佢哋睇呢度"
                      "零〇一二两三四五六七八九十百千万幺块元毛角")  # numbers are compared as amounts, not as words


def _stem(word: str) -> str:
    for suffix in ("ions", "ion", "ing", "ed", "es", "e", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


_PIECE = re.compile(r"[a-z][a-z0-9'&]*|[\u4e00-\u9fff]+")
_CJK_STOP_RUN = re.compile("[" + "".join(sorted(_CJK_STOP_CHARS)) + "]+")


def terms(text: str) -> list[str]:
    """The topic terms of ``text``, each once, in the order they first appear: concepts, English
    content words and Chinese character pairs (within runs of content characters)."""
    return list(_terms(text))


@lru_cache(maxsize=TEXT_MEMO)  # the repeat check and the new case's fingerprint read the same text
def _terms(text: str) -> tuple[str, ...]:
    folded = _fold(text)
    found: dict[str, None] = {}

    def concept(m: re.Match[str]) -> str:
        found[_CANON[m.group(0)]] = None
        return " "

    rest = _CONCEPT_RE.sub(concept, folded)
    for piece in _PIECE.findall(rest):
        if piece[0].isascii():
            w = piece.strip("'")
            if len(w) >= 3 and w not in STOP_EN and not w.isdigit():
                found[_stem(w)] = None
            continue
        for segment in _CJK_STOP_RUN.split(piece):
            for a, b in zip(segment, segment[1:]):
                if a + b not in STOP_ZH:
                    found[a + b] = None
    return tuple(found)


def overlap(a: set[str], b: set[str]) -> float:
    """How much two term sets share: concepts count double, and the share is of the smaller set
    (a follow-up is short; what it says should be in the case), damped for tiny sets."""
    if not a or not b:
        return 0.0
    shared = a & b
    if not shared:
        return 0.0

    def weight(ts: set[str]) -> float:
        return sum(2.0 if t.startswith("<") else 1.0 for t in ts)

    small = min(weight(a), weight(b))
    return weight(shared) / (small + 1.0)
