// One case: the whole thread across channels, evidence inline, the customer, the deadlines as
// live countdowns, the category with a one-click correction, repeats to merge or split, and the
// reply and resolve panels. A cheap poll (/v1/console/pulse) redraws it within a second of any
// change, without touching what the agent is typing.
import { EVENT_NAMES, MERGE_REASONS, REPLY_KINDS, TEMPLATE_NAMES } from "./i18n.js";
import {
  $, $$, api, categoryName, countdown, deliveryName, esc, every, evidenceUrl, fmtDuration, fmtTime, outcomeName, pill,
  problemText, refreshCountdowns, state, statusPill, t, toast,
} from "./core.js";

const PULSE_MS = 500;  // a change shows within a second, at two small calls a second per open case
const THREAD_EVENTS = new Set(["claimed", "released", "handed_back", "lease_expired", "merged", "merged_into", "split",
  "category_corrected", "rerouted", "resolved", "reopened", "sla_breached", "sla_warning", "clock_paused",
  "incident_linked", "possible_repeat", "triaged", "survey_answered", "progress_update"]);
let templates = null;

/** An event's detail in words: "from → to" (categories named), the outcome named, the reason quoted. */
function eventDetail(d) {
  const parts = [];
  if (d.from && d.to) parts.push(`${categoryName(d.from)} → ${categoryName(d.to)}`);
  else if (d.from) parts.push(`${d.from} →`);
  if (d.skill) parts.push(`${t("queue")} ${d.skill}`);
  if (d.outcome) parts.push(outcomeName(d.outcome));
  if (d.reason) parts.push(`“${MERGE_REASONS[state.lang]?.[d.reason] || d.reason}”`);
  for (const k of ["agent", "deadline", "incident_id", "level"]) if (d[k]) parts.push(`${k} ${d[k]}`);
  return parts.join(" · ");
}
const mergeReason = (reason) => MERGE_REASONS[state.lang]?.[reason] || reason;
const path = (c, tail = "") => `/v1/complaints/${encodeURIComponent(c.id)}${tail}`;

async function load(id) { return (await api(`/v1/complaints/${encodeURIComponent(id)}`)).data; }

// -- pieces ---------------------------------------------------------------------------------------

function head(c) {
  const me = state.me;
  const mine = c.status === "in_progress" && c.assignee === me.id && c.lease_expires_at;
  const other = c.assignee && c.assignee !== me.id && ["in_progress"].includes(c.status);
  const conf = c.category_confidence == null ? "" : ` <span class="muted">${t("confidence")} ${Math.round(c.category_confidence * 100)}%</span>`;
  return `<div class="case-title"><h2 id="case-number">${esc(c.case_number)}</h2> ${statusPill(c.status)}
      ${c.formal_complaint ? pill(t("formal"), "bad") : ""} ${c.stage ? pill(`${t("stage")}: ${c.stage}`, "warn") : ""}
      ${c.tags.map((tag) => pill(tag)).join(" ")}</div>
    <dl class="facts"><dt>${t("category")}</dt><dd id="case-category">${esc(categoryName(c.category))}${conf}</dd>
      <dt>${t("channel")}</dt><dd>${esc(c.channel)}</dd><dt>${t("queue")}</dt><dd>${esc(c.skill || "–")}</dd>
      <dt>${t("priority")}</dt><dd>${c.priority}</dd><dt>${t("assignee")}</dt><dd id="case-assignee">${esc(c.assignee || "–")}</dd>
      <dt>${t("created")}</dt><dd>${fmtTime(c.created_at)}</dd>
      ${c.amount ? `<dt>${t("amount")}</dt><dd>${esc(c.amount.value)} ${esc(c.amount.currency)}</dd>` : ""}
      ${c.outcome ? `<dt>${t("outcome")}</dt><dd>${esc(outcomeName(c.outcome))}${c.outcome_reason ? ` — ${esc(c.outcome_reason)}` : ""}</dd>` : ""}</dl>
    ${mine ? `<div id="lease" class="lease"><b>${t("lease")}</b> ${countdown(c.lease_expires_at)}
        <button class="secondary" id="lease-extend">${t("extend")}</button>
        <button class="secondary" id="lease-release">${t("release")}</button>
        <input id="handback-reason" placeholder="${esc(t("hand_back_reason"))}"> <button class="secondary" id="lease-handback">${t("hand_back")}</button></div>` : ""}
    ${other ? `<p class="bad" id="not-yours">${t("not_yours")} (${esc(c.assignee)})</p>` : ""}`;
}

function deadlines(c) {
  const name = (k) => k === "first_response" ? t("first_response") : k === "resolution" ? t("resolution") : k;
  const rows = c.deadlines.map((d) => {
    let when;
    if (d.state === "running") when = countdown(d.due);
    else if (d.state === "paused") when = `${t("paused")} (${fmtDuration(d.remaining_ms || 0)})`;
    else if (d.state === "met") when = `<span class="ok">${t("met")} ${fmtTime(d.met_at)}</span>`;
    else if (d.state === "breached") when = `<span class="bad">${t("breached")} ${fmtTime(d.breached_at)}</span>`;
    else when = t("cancelled");
    return `<tr data-deadline="${esc(d.kind)}"><td>${esc(name(d.kind))}</td><td>${fmtTime(d.due)}</td><td>${when}</td></tr>`;
  }).join("");
  return `<h3>${t("deadlines")}</h3><table class="compact">${rows || `<tr><td class="muted">${t("none")}</td></tr>`}</table>`;
}

function threadItems(c) {
  const merged = new Map(c.merges.filter((m) => !m.split).map((m) => [m.message_id, m]));
  const items = c.messages.map((m) => ({ at: m.received_at, html: `<div class="msg in" data-message="${esc(m.message_id)}">
      <div class="meta">${t("from_customer")} · ${esc(m.channel)} · ${fmtTime(m.received_at, { seconds: true })}
      ${merged.has(m.message_id) ? pill(`${t("merged_report")}: ${mergeReason(merged.get(m.message_id).reason)}`, "warn") : ""}
      ${m.edit_of ? pill("edited") : ""}</div>${m.subject ? `<b>${esc(m.subject)}</b>` : ""}<div class="text">${esc(m.text)}</div></div>` }));
  for (const r of c.replies) {
    items.push({ at: r.created_at, html: `<div class="msg out ${r.kind === "agent" ? "agent" : "auto"}" data-reply="${esc(r.id)}">
      <div class="meta">${t("from_desk")} · ${esc(REPLY_KINDS[state.lang]?.[r.kind] || r.kind)} · ${esc(r.author)} · ${esc(r.channel)} · ${fmtTime(r.created_at, { seconds: true })}
      <span class="delivery d-${esc(r.delivery)}">${esc(deliveryName(r.delivery))}</span>${r.error ? ` <span class="bad">${esc(r.error)}</span>` : ""}</div><div class="text">${esc(r.text)}</div></div>` });
  }
  for (const h of c.history) {
    if (!THREAD_EVENTS.has(h.action)) continue;
    const detail = eventDetail(h.detail || {});
    items.push({ at: h.at, html: `<div class="event" data-event="${esc(h.action)}">${fmtTime(h.at, { seconds: true })} · ${esc(EVENT_NAMES[state.lang]?.[h.action] || h.action)} · ${esc(h.actor)}${detail ? ` · ${esc(detail)}` : ""}</div>` });
  }
  return items.sort((a, b) => a.at.localeCompare(b.at)).map((i) => i.html).join("");
}

function evidence(c) {
  if (!c.evidence.length) return "";
  return `<h3>${t("evidence")}</h3><div class="evidence">${c.evidence.map((e) => {
    const label = esc(e.filename || e.id);
    if (e.state === "pending") return `<div class="ev muted">${label} · ${esc(e.content_type)} · ${t("pending")}</div>`;
    if (e.state === "failed") return `<div class="ev bad">${label} · ${t("failed")} (${esc(e.error || "")})</div>`;
    return `<div class="ev" data-evidence="${esc(e.id)}" data-type="${esc(e.content_type)}" data-src="${esc(path(c, `/evidence/${e.id}`))}">
      <div class="meta">${label} · ${esc(e.content_type)} · ${Math.ceil(e.size / 1024)} KB</div><div class="slot"></div></div>`;
  }).join("")}</div>`;
}

async function fillEvidence(root) {
  for (const el of $$(".ev[data-src]", root)) {
    const slot = $(".slot", el);
    if (slot.childElementCount) continue;
    try {
      const url = await evidenceUrl(el.dataset.src);
      const type = el.dataset.type;
      if (type.startsWith("image/")) slot.innerHTML = `<img alt="" src="${url}">`;
      else if (type.startsWith("audio/")) slot.innerHTML = `<audio controls preload="metadata" src="${url}"></audio>`;
      else if (type.startsWith("video/")) slot.innerHTML = `<video controls preload="metadata" src="${url}"></video>`;
      else if (type === "application/pdf") slot.innerHTML = `<a href="${url}" target="_blank" rel="noopener">${t("open_pdf")}</a>`;
      else if (type.startsWith("text/")) slot.innerHTML = `<pre class="transcript">${esc(await (await fetch(url)).text())}</pre>`;
      else slot.innerHTML = `<a href="${url}" download>${t("download")}</a>`;
    } catch (err) { slot.textContent = problemText(err); }
  }
}

function customer(c) {
  const cust = c.customer || { contacts: [], open_cases: [] };
  const others = cust.open_cases.filter((o) => o.id !== c.id);
  return `<h3>${t("customer")}</h3><p class="muted">${esc(cust.id || c.customer_id)} · ${t("cases_total")} ${cust.cases_total ?? "?"}</p>
    <ul class="plain">${cust.contacts.map((k) => `<li>${esc(k.kind)}: ${esc(k.value)}</li>`).join("") || `<li>${esc(c.contact.kind)}: ${esc(c.contact.value)}</li>`}</ul>
    <h4>${t("other_cases")}</h4><ul class="plain" id="other-cases">${others.map((o) => `<li><a href="#/case/${encodeURIComponent(o.id)}">${esc(o.case_number)}</a>
      ${statusPill(o.status)} ${esc(categoryName(o.category))}</li>`).join("") || `<li class="muted">${t("none")}</li>`}</ul>
    <button class="secondary small" id="all-cases">${t("all_cases")}</button>`;
}

function repeats(c) {
  const live = c.merges.filter((m) => !m.split);
  if (!c.possible_repeat_of && !live.length && !c.repeat_count) return "";
  return `<h3>${t("repeats")} (${c.repeat_count})</h3>
    ${c.possible_repeat_of ? `<p>${t("possible_repeat")}: <a href="#/case/${encodeURIComponent(c.possible_repeat_of)}">${esc(c.possible_repeat_of)}</a>
      <button class="secondary small" id="merge-btn">${t("merge_into")}</button></p>` : ""}
    <ul class="plain">${live.map((m) => `<li>${esc(m.message_id)} · ${esc(mergeReason(m.reason))} · ${fmtTime(m.at)}
      <button class="secondary small split" data-message="${esc(m.message_id)}">${t("split")}</button></li>`).join("")}</ul>
    <input id="repeat-reason" placeholder="${esc(t("merge_reason"))} / ${esc(t("split_reason"))}">`;
}

function appeal(c) {
  const parts = [];
  if (c.materials?.length) parts.push(`<h4>${t("materials")}</h4><ul class="plain">${c.materials.map((m) => `<li>${esc(m.kind)}${m.note ? ` (${esc(m.note)})` : ""} · ${esc(m.state)}</li>`).join("")}</ul>`);
  if (c.payment_check) {
    const p = c.payment_check;
    parts.push(`<h4>${t("payment_check")}</h4><p>${esc(p.source)} · ${p.found ? "found" : "not found"}${p.charge ? ` · ${esc(p.charge.amount.value)} ${esc(p.charge.amount.currency)} ${esc(p.charge.status)}` : ""}
      ${p.duplicates?.length ? pill(`duplicates: ${p.duplicates.length}`, "warn") : ""}${p.amount_mismatch ? pill("amount mismatch", "bad") : ""}${p.error ? ` <span class="bad">${esc(p.error)}</span>` : ""}</p>`);
  }
  if (c.refund) parts.push(`<h4>${t("refund")}</h4><p>${esc(c.refund.kind)} ${esc(c.refund.amount.value)} ${esc(c.refund.amount.currency)} · ${esc(c.refund.method)} · ${esc(c.refund.state)}</p>`);
  if (c.root_cause) parts.push(`<h4>${t("root_cause")}</h4><p>${esc(c.root_cause)}</p>`);
  return parts.join("");
}

function categoryPanel(c) {
  const cats = Object.keys(state.me.categories);
  return `<h3>${t("correct")}</h3>
    ${c.category_runner_up ? `<p>${t("runner_up")}: <button class="secondary small" id="use-runner-up" data-category="${esc(c.category_runner_up)}">${esc(categoryName(c.category_runner_up))}
      ${c.category_runner_up_confidence != null ? `${Math.round(c.category_runner_up_confidence * 100)}%` : ""}</button></p>` : ""}
    <label>${t("correct_to")} <select id="correct-category">${cats.map((k) => `<option value="${k}" ${k === c.category ? "selected" : ""}>${esc(categoryName(k))}</option>`).join("")}</select></label>
    <label>${t("correction_reason")} <input id="correct-reason" value="${esc(t("correction_default"))}"></label>
    <button id="correct-btn">${t("correct")}</button>`;
}

// -- the reply panel: templates with their placeholders filled ---------------------------------------

function placeholders(text) { return [...new Set([...text.matchAll(/\{([a-z_]+)\}/g)].map((m) => m[1]))].filter((p) => p !== "case"); }

function composePanel(c) {
  const names = Object.keys(templates || {});
  return `<h3>${t("reply")} <kbd>r</kbd></h3>
    <div class="row"><label>${t("template")} <select id="template"><option value="">${t("none_template")}</option>
      ${names.map((n) => `<option value="${n}">${esc(TEMPLATE_NAMES[state.lang]?.[n] || n)}</option>`).join("")}</select></label>
      <label>${t("language")} <select id="template-lang"><option value="zh" ${c.language === "zh" ? "selected" : ""}>中文</option>
      <option value="en" ${c.language !== "zh" ? "selected" : ""}>English</option></select></label></div>
    <div id="template-fields" class="row"></div>
    <textarea id="reply-text" rows="5"></textarea>
    <div class="row"><label><input type="checkbox" id="awaiting"> ${t("awaiting_customer")}</label>
      <button id="send-reply">${t("send")} <kbd>Ctrl+Enter</kbd></button></div>
    <hr><h3>${t("resolve")} <kbd>s</kbd></h3>
    <div class="row"><label>${t("outcome")} <select id="outcome">${["answered", "upheld", "partly_upheld", "rejected"].map((o) => `<option value="${o}">${esc(outcomeName(o))}</option>`).join("")}</select></label>
      <label><input type="checkbox" id="no-survey"> ${t("no_survey")}</label></div>
    <textarea id="resolve-reason" rows="2" placeholder="${esc(t("reason_for_customer"))}"></textarea>
    <p class="muted" id="rejected-note" hidden>${t("rejected_routes")}</p>
    <div class="row"><button id="resolve-btn">${t("resolve")}</button></div>`;
}

function bindCompose(c) {
  const fill = () => {
    const name = $("#template").value;
    if (!name) { $("#template-fields").innerHTML = ""; return; }
    const text = templates[name][$("#template-lang").value].text;
    const values = { case: c.case_number };
    $$("#template-fields input").forEach((i) => { values[i.dataset.placeholder] = i.value; });
    $("#reply-text").value = text.replace(/\{([a-z_]+)\}/g, (_, p) => values[p] ?? "");
  };
  const fields = () => {
    const name = $("#template").value;
    if (!name) { $("#template-fields").innerHTML = ""; return; }
    const known = { amount: c.amount ? `${c.amount.value} ${c.amount.currency}` : "" };
    $("#template-fields").innerHTML = placeholders(templates[name][$("#template-lang").value].text).map((p) =>
      `<label>{${esc(p)}} <input data-placeholder="${esc(p)}" value="${esc(known[p] || "")}"></label>`).join("");
    $$("#template-fields input").forEach((i) => { i.oninput = fill; });
    fill();
  };
  $("#template").onchange = fields;
  $("#template-lang").onchange = fields;
  $("#outcome").onchange = () => { $("#rejected-note").hidden = $("#outcome").value !== "rejected"; };
  $("#send-reply").onclick = () => sendReply(c);
  $("#resolve-btn").onclick = () => resolve(c);
  $("#reply-text").onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); sendReply(c); } };
  $("#resolve-reason").onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); resolve(c); } };
}

async function sendReply(c) {
  const text = $("#reply-text").value.trim();
  if (!text) { $("#reply-text").focus(); return; }
  try {
    await api(path(c, "/replies"), { method: "POST", body: { text, awaiting_customer: $("#awaiting").checked } });
    $("#reply-text").value = "";
    $("#template").value = "";
    $("#template-fields").innerHTML = "";
    toast(t("sent_ok"));
  } catch (err) { toast(problemText(err), "bad"); }
}

async function resolve(c) {
  const outcome = $("#outcome").value, reason = $("#resolve-reason").value.trim();
  if (outcome === "rejected" && !reason) { $("#resolve-reason").focus(); toast(t("rejected_routes"), "warn"); return; }
  try {
    await api(path(c, "/resolve"), { method: "POST", body: { outcome, reason, no_survey: $("#no-survey").checked } });
    toast(t("resolved_ok"));
  } catch (err) { toast(problemText(err), "bad"); }
}

// -- the screen -------------------------------------------------------------------------------------

/** Redraw without losing what the agent is typing in the redrawn parts (a live update may land
 * between two keystrokes): inputs with an id keep their value, and the focus stays where it was. */
function keepTyping(redraw) {
  const kept = $$("#case-head input[id], #case-repeats input[id]").map((el) => [el.id, el.value]);
  const focused = document.activeElement?.id;
  redraw();
  for (const [id, value] of kept) { const el = document.getElementById(id); if (el) el.value = value; }
  if (focused && document.activeElement?.id !== focused) document.getElementById(focused)?.focus();
}

export async function caseView(id) {
  if (templates === null) templates = (await api("/v1/templates")).data.templates;
  let c = await load(id);
  $("#view").innerHTML = `<div id="case" data-id="${esc(c.id)}"><div class="toolbar"><a href="#/work" class="back">← ${t("back")}</a>
      <span class="muted keys">${t("keys_hint")}</span><span class="live" id="live">● ${t("live")}</span></div>
    <div class="case-grid"><section><div class="card" id="case-head"></div>
      <div class="card"><h3>${t("thread")}</h3><div class="thread" id="thread"></div></div>
      <div class="card" id="case-evidence"></div><div class="card" id="compose">${composePanel(c)}</div>
      <div class="card" id="closed-note" hidden><h3>${t("reopen")}</h3><p class="muted">${t("reopen_note")}</p>
        <div class="row"><input id="reopen-reason" class="grow" placeholder="${esc(t("reopen_reason"))}">
        <button id="reopen-btn">${t("reopen")}</button></div></div></section>
    <aside><div class="card" id="case-deadlines"></div><div class="card" id="category-panel">${categoryPanel(c)}</div>
      <div class="card" id="case-customer"></div><div class="card" id="case-repeats"></div><div class="card" id="case-appeal"></div></aside></div></div>`;
  bindCompose(c);
  const draw = () => keepTyping(() => {
    $("#case-head").innerHTML = head(c);
    const thread = $("#thread"), atEnd = thread.scrollTop + thread.clientHeight >= thread.scrollHeight - 40;
    thread.innerHTML = threadItems(c);
    if (atEnd) thread.scrollTop = thread.scrollHeight;  // the newest stays in view
    const closed = ["resolved", "closed"].includes(c.status);
    $("#compose").hidden = closed;
    $("#closed-note").hidden = !closed;
    const ev = evidence(c);
    $("#case-evidence").hidden = !ev;
    if ($("#case-evidence").dataset.html !== ev) { $("#case-evidence").innerHTML = ev; $("#case-evidence").dataset.html = ev; fillEvidence($("#case-evidence")); }
    $("#case-deadlines").innerHTML = deadlines(c);
    $("#case-customer").innerHTML = customer(c);
    const rep = repeats(c), app = appeal(c);
    $("#case-repeats").hidden = !rep;
    $("#case-repeats").innerHTML = rep;
    $("#case-appeal").hidden = !app;
    $("#case-appeal").innerHTML = app;
    bindDynamic();
    refreshCountdowns();
  });
  const reload = async () => { c = await load(id); draw(); };
  const act = async (call, done) => {
    try { await call(); if (done) toast(done); await reload(); } catch (err) { toast(problemText(err), "bad"); }
  };
  const bindDynamic = () => {
    const lease = (what, body) => act(() => api(`/v1/console/cases/${encodeURIComponent(c.id)}/lease/${what}`, { method: "POST", body }));
    if ($("#lease-extend")) {
      $("#lease-extend").onclick = () => lease("extend");
      $("#lease-release").onclick = () => lease("release").then(() => { location.hash = "#/work"; });
      $("#lease-handback").onclick = () => {
        if (!$("#handback-reason").value.trim()) { $("#handback-reason").focus(); toast(t("hand_back_reason"), "warn"); return; }
        lease("hand-back", { reason: $("#handback-reason").value });
      };
    }
    $("#all-cases").onclick = async () => {
      const { data } = await api(`/v1/complaints?customer=${encodeURIComponent(c.customer_id)}&limit=50`);
      $("#other-cases").innerHTML = data.items.filter((o) => o.id !== c.id).map((o) => `<li><a href="#/case/${encodeURIComponent(o.id)}">${esc(o.case_number)}</a>
        ${statusPill(o.status)} ${esc(categoryName(o.category))} · ${fmtTime(o.created_at)}</li>`).join("") || `<li class="muted">${t("none")}</li>`;
    };
    if ($("#merge-btn")) $("#merge-btn").onclick = () => act(() => api(path(c, "/merge"), { method: "POST", body: { into: c.possible_repeat_of, reason: $("#repeat-reason").value || t("merge_into") } }));
    $$("button.split").forEach((b) => { b.onclick = () => act(() => api(path(c, "/split"), { method: "POST", body: { message_id: b.dataset.message, reason: $("#repeat-reason").value || t("split") } })); });
  };
  $("#reopen-btn").onclick = () => {
    const reason = $("#reopen-reason").value.trim();
    if (!reason) { $("#reopen-reason").focus(); toast(t("reopen_reason"), "warn"); return; }
    act(() => api(`/v1/console/cases/${encodeURIComponent(c.id)}/reopen`, { method: "POST", body: { reason } }), t("reopened_ok"))
      .then(() => { $("#reopen-reason").value = ""; });
  };
  if ($("#use-runner-up")) $("#use-runner-up").onclick = () => { $("#correct-category").value = $("#use-runner-up").dataset.category; $("#correct-btn").click(); };
  $("#correct-btn").onclick = () => act(() => api(path(c), { method: "PATCH", body: { category: $("#correct-category").value, reason: $("#correct-reason").value } }));
  draw();
  // the cheap poll: a fingerprint of the case; the case itself only when it changed
  let version = (await api(`/v1/console/pulse?case=${encodeURIComponent(c.id)}`)).data.version;
  let busy = false;
  every(PULSE_MS, async () => {
    if (busy) return;
    busy = true;
    try {
      const { data } = await api(`/v1/console/pulse?case=${encodeURIComponent(c.id)}`);
      $("#live").classList.remove("off");
      if (data.version !== version) { version = data.version; await reload(); }
    } catch { $("#live")?.classList.add("off"); } finally { busy = false; }
  });
}

/** Keys on the case screen: r reply, s resolve. */
export function caseKey(e) {
  if (e.key === "r") { $("#reply-text")?.focus(); return true; }
  if (e.key === "s") { $("#outcome")?.focus(); $("#compose")?.scrollIntoView({ block: "end" }); return true; }
  return false;
}
