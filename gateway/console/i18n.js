// Every word the console shows, in English and Chinese. Category names come from the gateway
// (/v1/console/me), so the taxonomy is named in one place.
export const STRINGS = {
  en: {
    title: "Complaint desk", signin_title: "Sign in", token: "Your agent or supervisor token", signin: "Sign in",
    bad_login: "That token is not valid.", logout: "Log out", signed_in_as: "Signed in as",
    nav_work: "Workspace", nav_dashboard: "Dashboard", nav_queues: "Queues", nav_complaints: "Complaints",
    nav_incidents: "Incidents", nav_rules: "Routing rules", nav_report: "Service report", nav_quarantine: "Quarantine",
    role_agent: "agent", role_supervisor: "supervisor",
    // workspace
    my_queues: "My queues", due_soonest: "Due soonest", my_cases: "Cases I hold", claim_next: "Claim next",
    nothing_to_claim: "Nothing is waiting in your queues.", claimed_ok: "Claimed", open: "Open",
    waiting: "Waiting", oldest: "Oldest", breached: "Breached", near: "Due soon", awaiting_first: "Awaiting first response",
    keys_hint: "Keys: n next case · r reply · s resolve · Esc back to the list · Ctrl+Enter send",
    // case
    case: "Case", status: "Status", category: "Category", channel: "Channel", priority: "Priority", queue: "Queue",
    assignee: "Assignee", created: "Opened", formal: "Formal complaint", confidence: "confidence",
    runner_up: "runner-up", correct: "Correct the category", correct_to: "Correct to", correction_reason: "Why",
    correction_default: "Checked against the customer's words", lease: "Your hold", lease_ends: "ends",
    extend: "Extend", release: "Release", hand_back: "Hand back", hand_back_reason: "Why you hand it back",
    deadlines: "Deadlines", thread: "Thread", customer: "Customer", contacts: "Contacts", other_cases: "Other cases",
    all_cases: "All cases", cases_total: "cases in all", evidence: "Evidence", pending: "fetching…", failed: "could not be fetched",
    open_pdf: "Open PDF", download: "Download", transcript: "Transcript", repeats: "Repeat reports",
    possible_repeat: "Possibly repeats", merge_into: "Merge into it", merge_reason: "Why they are the same",
    split: "Split out", split_reason: "Why it is a different problem", merged_report: "repeat report",
    reply: "Reply", template: "Template", none_template: "— write freely —", language: "Language",
    placeholders: "Placeholders", awaiting_customer: "Ask the customer for something (clock pauses)",
    send: "Send", sent_ok: "Reply queued", resolve: "Resolve", outcome: "Outcome", reason: "Reason",
    reason_for_customer: "Reason (the customer reads it)", rejected_routes: "A rejection tells the customer the further routes open to them (review, 12363, the regulator, arbitration, the courts).",
    reopen_note: "A resolved case reopens by itself when the customer writes again within the reopen window; reopen it here when the desk needs to.",
    reopen: "Reopen", reopen_reason: "Why it is reopened", reopened_ok: "Reopened",
    resolved_ok: "Resolved", no_survey: "No survey", materials: "Materials requested", payment_check: "Payment check",
    refund: "Refund", root_cause: "Root cause", stage: "Stage", history: "History", by: "By", at: "When",
    delivery: "delivery", from_customer: "Customer", from_desk: "Desk", live: "live",
    not_yours: "Another agent holds this case.", back: "Back to my list",
    // deadlines
    due_in: "due in", overdue: "overdue by", met: "met", paused: "paused", cancelled: "cancelled",
    first_response: "First response", resolution: "Resolution",
    // supervisors
    depth: "Waiting", updated: "updated", all: "all", filter: "Filter", messages: "Thread",
    answer: "Answer all", answer_zh: "Answer (Chinese)", answer_en: "Answer (English)", customers: "customers",
    retry: "Retry", discard: "Discard", size: "Size", none: "Nothing here.",
    resolution_rate: "Resolution rate", satisfaction: "Satisfaction", fr_within: "First response within standard",
    goal: "goal", complaints_n: "Complaints",
    dash_depth: "Queue depth", dash_fr: "First-response time (median) against the standard",
    dash_fr_share: "Answered within the standard", dash_breaches_q: "Breaches per queue", dash_breaches_ch: "Breaches per channel",
    dash_trend: "Service by day", dash_arrivals: "New cases per channel", last_hours: "Last", hours: "hours",
    standard: "standard", seconds: "s",
    // rules
    rules_form: "Form", rules_json: "JSON", queues: "Queues", add_queue: "Add queue", new_queue: "new queue name",
    rules: "Rules (first match wins)", add_rule: "Add rule", rule_id: "Rule id", description: "Description",
    when: "When", then: "Then", any: "any", yes: "yes", no: "no", categories: "Categories", channels: "Channels",
    languages: "Languages", amount: "Amount", amount_min: "from", amount_max: "to", currencies: "Currencies",
    tiers: "Customer tiers", keywords: "Any of these words", regex: "Text pattern (regex)",
    repeat_min: "Repeat reports at least", business_hours: "Business hours", inside: "inside", outside: "outside",
    target_queue: "Queue", target_priority: "Priority", top: "top", boost: "Priority boost",
    fr_override: "First response (s)", res_override: "Resolution (s)", tags: "Tags",
    move_up: "Move up", move_down: "Move down", to_top: "To top", remove: "Remove", drag: "Drag to reorder",
    default_target: "Where nothing matches", triage: "Triage (unsure categoriser)", triage_below: "confidence below",
    comma: "comma-separated", dryrun: "Check & dry run", save: "Save", change_reason: "Why (recorded with the version)",
    reason_needed: "Say why: the reason is kept with the version.", version: "Version",
    would_move: "would move", unchanged: "unchanged", examined: "examined", from: "From", to: "To", count: "Count",
    examples: "Examples", problems: "Problems", rollback: "Roll back to version", rollback_reason: "Why roll back",
    saved: "Saved as version", conflict: "Someone saved first: reload and apply your change again.",
    dryrun_first: "Run the dry run before saving.",
  },
  zh: {
    title: "投诉受理台", signin_title: "登录", token: "坐席或主管令牌", signin: "登录", bad_login: "令牌无效。",
    logout: "退出", signed_in_as: "当前用户",
    nav_work: "工作台", nav_dashboard: "监控看板", nav_queues: "队列", nav_complaints: "投诉", nav_incidents: "事件",
    nav_rules: "路由规则", nav_report: "服务报告", nav_quarantine: "隔离区", role_agent: "坐席", role_supervisor: "主管",
    my_queues: "我的队列", due_soonest: "即将到期", my_cases: "我持有的案件", claim_next: "领取下一件",
    nothing_to_claim: "您的队列中暂无待处理案件。", claimed_ok: "已领取", open: "打开",
    waiting: "等待", oldest: "最久等待", breached: "已超时", near: "即将到期", awaiting_first: "待首次响应",
    keys_hint: "快捷键：n 下一件 · r 答复 · s 办结 · Esc 返回列表 · Ctrl+Enter 发送",
    case: "案件", status: "状态", category: "类别", channel: "渠道", priority: "优先级", queue: "队列",
    assignee: "处理人", created: "受理时间", formal: "正式投诉", confidence: "置信度", runner_up: "次选",
    correct: "更正类别", correct_to: "更正为", correction_reason: "原因", correction_default: "已核对客户原话",
    lease: "持有时限", lease_ends: "到期", extend: "延长", release: "释放", hand_back: "退回", hand_back_reason: "退回原因",
    deadlines: "时限", thread: "沟通记录", customer: "客户", contacts: "联系方式", other_cases: "其他案件",
    all_cases: "全部案件", cases_total: "案件总数", evidence: "证据", pending: "获取中…", failed: "获取失败", open_pdf: "打开 PDF",
    download: "下载", transcript: "文字转写", repeats: "重复投诉", possible_repeat: "疑似重复", merge_into: "合并到该案件",
    merge_reason: "合并原因", split: "拆分", split_reason: "拆分原因", merged_report: "重复投诉",
    reply: "答复", template: "模板", none_template: "— 自由撰写 —", language: "语言", placeholders: "占位内容",
    awaiting_customer: "需客户补充（时限暂停）", send: "发送", sent_ok: "答复已排队发送", resolve: "办结",
    outcome: "处理结果", reason: "原因", reason_for_customer: "原因（客户可见）",
    rejected_routes: "不予支持时，会告知客户其他救济途径（申请复核、12363、监管部门、仲裁、诉讼）。",
    reopen_note: "客户在重开期限内再次来信，已办结案件将自动重新打开；如需由客服重开，请在此操作。",
    reopen: "重新打开", reopen_reason: "重开原因", reopened_ok: "已重新打开",
    resolved_ok: "已办结", no_survey: "不发送满意度调查", materials: "已要求的材料", payment_check: "支付记录核实",
    refund: "退款", root_cause: "根本原因", stage: "阶段", history: "历史", by: "操作人", at: "时间",
    delivery: "送达", from_customer: "客户", from_desk: "客服", live: "实时",
    not_yours: "该案件由其他坐席持有。", back: "返回列表",
    due_in: "剩余", overdue: "已超时", met: "已达标", paused: "已暂停", cancelled: "已取消",
    first_response: "首次响应", resolution: "办结",
    depth: "等待", updated: "更新于", all: "全部", filter: "筛选", messages: "沟通记录",
    answer: "统一答复", answer_zh: "答复（中文）", answer_en: "答复（英文）", customers: "位客户",
    retry: "重试", discard: "丢弃", size: "大小", none: "暂无内容。",
    resolution_rate: "解决率", satisfaction: "满意度", fr_within: "首次响应达标率", goal: "目标", complaints_n: "投诉量",
    dash_depth: "队列积压", dash_fr: "首次响应时间（中位数）与标准", dash_fr_share: "标准内响应占比",
    dash_breaches_q: "各队列超时", dash_breaches_ch: "各渠道超时", dash_trend: "每日服务指标",
    dash_arrivals: "各渠道新增案件", last_hours: "最近", hours: "小时", standard: "标准", seconds: "秒",
    rules_form: "表单", rules_json: "JSON", queues: "队列", add_queue: "添加队列", new_queue: "新队列名",
    rules: "规则（按顺序，先匹配先生效）", add_rule: "添加规则", rule_id: "规则编号", description: "说明",
    when: "条件", then: "目标", any: "不限", yes: "是", no: "否", categories: "类别", channels: "渠道",
    languages: "语言", amount: "金额", amount_min: "从", amount_max: "到", currencies: "币种", tiers: "客户等级",
    keywords: "包含任一关键词", regex: "文本模式（正则）", repeat_min: "重复投诉次数至少", business_hours: "工作时间",
    inside: "工作时间内", outside: "工作时间外", target_queue: "队列", target_priority: "优先级", top: "最高",
    boost: "优先级加成", fr_override: "首次响应（秒）", res_override: "办结时限（秒）", tags: "标签",
    move_up: "上移", move_down: "下移", to_top: "置顶", remove: "删除", drag: "拖动排序",
    default_target: "未匹配时", triage: "分诊（分类器不确定时）", triage_below: "置信度低于", comma: "逗号分隔",
    dryrun: "校验并试运行", save: "保存", change_reason: "修改原因（随版本记录）", reason_needed: "请填写原因：原因会随版本保存。",
    version: "版本", would_move: "将变更队列", unchanged: "不变", examined: "已检查", from: "原队列", to: "新队列",
    count: "数量", examples: "示例", problems: "问题", rollback: "回滚到版本", rollback_reason: "回滚原因",
    saved: "已保存为版本", conflict: "他人已先保存：请刷新后重新修改。", dryrun_first: "保存前请先试运行。",
  },
};

export const STATUS_NAMES = {
  en: { received: "Received", accepted: "Waiting", in_progress: "In progress", responded: "Answered",
        resolved: "Resolved", closed: "Closed", reopened: "Reopened" },
  zh: { received: "已接收", accepted: "待处理", in_progress: "处理中", responded: "已答复", resolved: "已办结",
        closed: "已关闭", reopened: "已重开" },
};

export const OUTCOME_NAMES = {
  en: { upheld: "Upheld", partly_upheld: "Partly upheld", rejected: "Not upheld", answered: "Answered" },
  zh: { upheld: "申诉成立", partly_upheld: "部分成立", rejected: "不予支持", answered: "已解答" },
};

export const DELIVERY_NAMES = {
  en: { queued: "queued", sent: "sent", delivered: "delivered", failed: "failed", suppressed: "not sent (opted out)",
        held: "held" },
  zh: { queued: "排队中", sent: "已发出", delivered: "已送达", failed: "发送失败", suppressed: "未发送（已退订）",
        held: "暂缓" },
};

export const TEMPLATE_NAMES = {
  en: { ack: "Acknowledgement", repeat_ack: "Repeat report noted", outcome_upheld: "Outcome: upheld",
        outcome_partly_upheld: "Outcome: partly upheld", outcome_rejected: "Outcome: not upheld",
        outcome_answered: "Outcome: answered", survey: "Survey", survey_thanks: "Thanks for the score",
        reopened: "Reopened", progress_update: "Progress update", materials_request: "Ask for materials",
        materials_reminder: "Materials reminder", materials_received: "Materials received",
        outcome_refund: "Refund", outcome_compensation: "Compensation" },
  zh: { ack: "受理确认", repeat_ack: "重复投诉已合并", outcome_upheld: "结果：申诉成立", outcome_partly_upheld: "结果：部分成立",
        outcome_rejected: "结果：不予支持", outcome_answered: "结果：已解答", survey: "满意度调查", survey_thanks: "感谢评价",
        reopened: "案件重开", progress_update: "进度更新", materials_request: "要求补充材料", materials_reminder: "材料提醒",
        materials_received: "材料已收到", outcome_refund: "退款", outcome_compensation: "补偿" },
};

//: What happened to a case, as the thread shows it.
export const EVENT_NAMES = {
  en: { claimed: "claimed", released: "released", handed_back: "handed back", lease_expired: "hold ran out",
        merged: "repeat report merged", merged_into: "merged into another case", split: "split out",
        category_corrected: "category corrected", rerouted: "re-routed", resolved: "resolved", reopened: "reopened",
        sla_breached: "deadline breached", sla_warning: "deadline near", clock_paused: "clock paused",
        incident_linked: "part of an incident", possible_repeat: "possible repeat", triaged: "triaged",
        survey_answered: "survey answered", progress_update: "progress update sent" },
  zh: { claimed: "已领取", released: "已释放", handed_back: "已退回", lease_expired: "持有超时", merged: "重复投诉已合并",
        merged_into: "已并入其他案件", split: "已拆分", category_corrected: "类别已更正", rerouted: "已改派",
        resolved: "已办结", reopened: "已重新打开", sla_breached: "时限已超", sla_warning: "时限将到",
        clock_paused: "时限暂停", incident_linked: "归入事件", possible_repeat: "疑似重复", triaged: "已分诊",
        survey_answered: "已评价", progress_update: "已发送进度" },
};

//: The kinds of what we sent the customer.
export const REPLY_KINDS = {
  en: { ack: "acknowledgement", repeat_ack: "repeat noted", agent: "answer", status: "status", survey: "survey",
        notice: "notice", progress: "progress" },
  zh: { ack: "受理确认", repeat_ack: "重复投诉确认", agent: "答复", status: "进度查询", survey: "满意度调查",
        notice: "通知", progress: "进度" },
};

//: Why a message was taken as a repeat report.
export const MERGE_REASONS = {
  en: { same_transaction: "same transaction", same_amount: "same amount", similar_text: "similar words",
        agent_merge: "merged by the desk" },
  zh: { same_transaction: "同一笔交易", same_amount: "相同金额", similar_text: "内容相似", agent_merge: "客服合并" },
};
