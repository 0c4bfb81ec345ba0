// The supervisors' rule editor: each rule a row of conditions and targets, reordered by drag or
// buttons; problems shown on the row and field they concern; the dry run before saving; a
// required reason; history and rollback. The JSON view stays for those who prefer it.
import { $, $$, ApiError, api, categoryName, esc, fmtTime, problemText, state, t, toast } from "./core.js";

const LIST_FIELDS = ["channels", "currencies", "tiers", "keywords"];
let draft = null, etag = null, version = 0, dryRunFor = null, tab = "form";

const csv = (v) => (v || []).join(", ");
const list = (text) => { const items = text.split(/[,，]/).map((s) => s.trim()).filter(Boolean); return items.length ? items : undefined; };
const num = (text) => (text === "" ? undefined : Number(text));

function triState(field, value, labels) {
  const v = value === true ? "yes" : value === false ? "no" : "";
  return `<select data-field="${field}"><option value="">${t("any")}</option><option value="yes" ${v === "yes" ? "selected" : ""}>${labels[0]}</option>
    <option value="no" ${v === "no" ? "selected" : ""}>${labels[1]}</option></select>`;
}

function targetFields(then, prefix) {
  const queues = draft.queues;
  return `<label>${t("target_queue")} <select data-field="${prefix}.skill">${[...new Set([...queues, then.skill])].filter(Boolean).map((q) => `<option ${q === then.skill ? "selected" : ""}>${esc(q)}</option>`).join("")}</select></label>
    <label>${t("target_priority")} <select data-field="${prefix}.priority"><option value="">${t("any")}</option>
      ${[9, 8, 7, 6, 5, 4, 3, 2, 1, 0].map((p) => `<option value="${p}" ${then.priority === p ? "selected" : ""}>${p}${p === 9 ? ` (${t("top")})` : ""}</option>`).join("")}</select></label>
    <label>${t("boost")} <input type="number" min="-9" max="9" data-field="${prefix}.priority_boost" value="${then.priority_boost ?? ""}"></label>
    <label>${t("fr_override")} <input type="number" min="1" data-field="${prefix}.first_response_seconds" value="${then.first_response_seconds ?? ""}"></label>
    <label>${t("res_override")} <input type="number" min="1" data-field="${prefix}.resolution_seconds" value="${then.resolution_seconds ?? ""}"></label>
    <label>${t("tags")} <input data-field="${prefix}.tags" value="${esc(csv(then.tags))}" placeholder="${t("comma")}"></label>`;
}

function ruleRow(rule, i) {
  const w = rule.when || {};
  const cats = Object.keys(state.me.categories);
  return `<div class="rule" data-index="${i}" data-rule="${esc(rule.id)}" draggable="true">
    <div class="rule-head"><span class="handle" title="${t("drag")}">⋮⋮</span><b>#${i + 1}</b>
      <label>${t("rule_id")} <input data-field="id" value="${esc(rule.id)}" pattern="[a-z0-9][a-z0-9_-]*"></label>
      <label class="grow">${t("description")} <input data-field="description" value="${esc(rule.description || "")}"></label>
      <button class="secondary small" data-move="top" title="${t("to_top")}">⤒</button>
      <button class="secondary small" data-move="-1" title="${t("move_up")}">↑</button>
      <button class="secondary small" data-move="1" title="${t("move_down")}">↓</button>
      <button class="secondary small danger" data-move="remove" title="${t("remove")}">✕</button></div>
    <div class="rule-body"><div class="when"><h4>${t("when")}</h4>
      <fieldset data-field="when.categories"><legend>${t("categories")}</legend>${cats.map((c) => `<label class="chk"><input type="checkbox" value="${c}" ${(w.categories || []).includes(c) ? "checked" : ""}>${esc(categoryName(c))}</label>`).join("")}</fieldset>
      <label>${t("formal")} ${triState("when.formal", w.formal, [t("yes"), t("no")])}</label>
      <fieldset data-field="when.languages"><legend>${t("languages")}</legend>${["zh", "en"].map((l) => `<label class="chk"><input type="checkbox" value="${l}" ${(w.languages || []).includes(l) ? "checked" : ""}>${l}</label>`).join("")}</fieldset>
      <label>${t("channels")} <input data-field="when.channels" value="${esc(csv(w.channels))}" placeholder="${t("comma")}" list="known-channels"></label>
      <label>${t("amount")} ${t("amount_min")} <input class="short" data-field="when.amount_min" value="${esc(w.amount_min ?? "")}"> ${t("amount_max")} <input class="short" data-field="when.amount_max" value="${esc(w.amount_max ?? "")}"></label>
      <label>${t("currencies")} <input class="short" data-field="when.currencies" value="${esc(csv(w.currencies))}"></label>
      <label>${t("tiers")} <input data-field="when.tiers" value="${esc(csv(w.tiers))}" placeholder="${t("comma")}"></label>
      <label>${t("keywords")} <input data-field="when.keywords" value="${esc(csv(w.keywords))}" placeholder="${t("comma")}"></label>
      <label>${t("regex")} <input data-field="when.regex" value="${esc(w.regex ?? "")}"></label>
      <label>${t("repeat_min")} <input type="number" min="0" class="short" data-field="when.repeat_count_min" value="${w.repeat_count_min ?? ""}"></label>
      <label>${t("business_hours")} ${triState("when.business_hours", w.business_hours, [t("inside"), t("outside")])}</label></div>
    <div class="then"><h4>${t("then")}</h4>${targetFields(rule.then || {}, "then")}</div></div></div>`;
}

/** The rule set as the form shows it now. */
function collect() {
  const read = (root, field) => $(`[data-field="${field}"]`, root);
  const target = (root, prefix) => {
    const out = { skill: read(root, `${prefix}.skill`).value };
    const pr = read(root, `${prefix}.priority`).value;
    if (pr !== "") out.priority = Number(pr);
    for (const f of ["priority_boost", "first_response_seconds", "resolution_seconds"]) {
      const v = num(read(root, `${prefix}.${f}`).value);
      if (v !== undefined && !(f === "priority_boost" && v === 0)) out[f] = v;
    }
    const tags = list(read(root, `${prefix}.tags`).value);
    if (tags) out.tags = tags;
    return out;
  };
  const rules = $$("#rule-list .rule").map((row) => {
    const when = {};
    for (const f of ["categories", "languages"]) {
      const checked = $$(`[data-field="when.${f}"] input:checked`, row).map((i) => i.value);
      if (checked.length) when[f] = checked;
    }
    for (const f of LIST_FIELDS) { const v = list(read(row, `when.${f}`).value); if (v) when[f] = v; }
    for (const f of ["formal", "business_hours"]) { const v = read(row, `when.${f}`).value; if (v) when[f] = v === "yes"; }
    for (const f of ["amount_min", "amount_max", "regex"]) { const v = read(row, `when.${f}`).value.trim(); if (v) when[f] = v; }
    const rc = num(read(row, "when.repeat_count_min").value);
    if (rc !== undefined) when.repeat_count_min = rc;
    const rule = { id: read(row, "id").value.trim(), when, then: target(row, "then") };
    const description = read(row, "description").value.trim();
    if (description) rule.description = description;
    return rule;
  });
  const out = { queues: $$("#queue-list [data-queue]").map((q) => q.dataset.queue), rules, default: target($("#default-target"), "default") };
  const below = $("#triage-below").value;
  if (below !== "") out.triage = { below: Number(below), queue: $("#triage-queue").value };
  return out;
}

function current() {
  if (tab === "json") {
    try { return JSON.parse($("#rules-text").value); } catch (err) { showProblems([{ rule: "", field: "", problem: err.message }]); return null; }
  }
  return collect();
}

function drawForm() {
  $("#rules-form").innerHTML = `<div class="card"><h3>${t("queues")}</h3><div id="queue-list" data-field="queues">${draft.queues.map((q) => `<span class="chip" data-queue="${esc(q)}">${esc(q)} <button class="link" data-drop-queue="${esc(q)}" title="${t("remove")}">✕</button></span>`).join("")}</div>
      <input id="new-queue" placeholder="${t("new_queue")}" pattern="[a-z0-9][a-z0-9_-]*"> <button class="secondary small" id="add-queue">${t("add_queue")}</button></div>
    <div class="card"><div class="toolbar"><h3>${t("rules")}</h3><button class="secondary small" id="add-rule">${t("add_rule")}</button></div>
      <div id="rule-list">${draft.rules.map(ruleRow).join("")}</div></div>
    <div class="card rule" id="default-target" data-rule="default"><h3>${t("default_target")}</h3><div class="then">${targetFields(draft.default || { skill: draft.queues[0] }, "default")}</div></div>
    <div class="card" id="triage" data-rule="triage"><h3>${t("triage")}</h3><label>${t("triage_below")} <input type="number" step="0.05" min="0" max="1" id="triage-below" class="short" value="${draft.triage?.below ?? ""}"></label>
      <label>${t("target_queue")} <select id="triage-queue" data-field="triage.queue">${draft.queues.map((q) => `<option ${q === draft.triage?.queue ? "selected" : ""}>${esc(q)}</option>`).join("")}</select></label></div>
    <datalist id="known-channels">${["app", "email", "twilio_sms", "twilio_voice", "whatsapp", "messenger", "instagram", "telegram", "wechat", "counter", "phone"].map((c) => `<option value="${c}">`).join("")}</datalist>`;
  const restructure = (fn, show = null) => {
    draft = collect();
    fn();
    drawForm();
    if (show !== null) {  // the rule that moved (or was added) stays in sight, marked for a moment
      const row = $(`#rule-list .rule[data-index="${show}"]`);
      row?.scrollIntoView({ block: "center" });
      row?.classList.add("moved");
    }
  };
  $("#add-queue").onclick = () => {
    const name = $("#new-queue").value.trim();
    if (name) restructure(() => { if (!draft.queues.includes(name)) draft.queues.push(name); });
  };
  $("#new-queue").onkeydown = (e) => { if (e.key === "Enter") { e.preventDefault(); $("#add-queue").click(); } };
  $$("[data-drop-queue]").forEach((b) => { b.onclick = () => restructure(() => { draft.queues = draft.queues.filter((q) => q !== b.dataset.dropQueue); }); });
  $("#add-rule").onclick = () => restructure(() => {
    draft.rules.push({ id: `rule-${draft.rules.length + 1}`, when: {}, then: { skill: draft.queues[draft.queues.length - 1] } });
  }, draft.rules.length);
  $$("#rule-list .rule").forEach((row) => {
    const i = Number(row.dataset.index);
    $('[data-field="id"]', row).oninput = (e) => { row.dataset.rule = e.target.value.trim(); };
    $$("[data-move]", row).forEach((b) => {
      const m = b.dataset.move;
      const to = m === "top" ? 0 : m === "remove" ? null : Math.max(0, Math.min(draft.rules.length - 1, i + Number(m)));
      b.onclick = () => restructure(() => {
        const [rule] = draft.rules.splice(i, 1);
        if (to !== null) draft.rules.splice(to, 0, rule);
      }, to);
    });
    row.ondragstart = (e) => { e.dataTransfer.setData("text/plain", String(i)); row.classList.add("dragging"); };
    row.ondragend = () => row.classList.remove("dragging");
    row.ondragover = (e) => { e.preventDefault(); row.classList.add("drop"); };
    row.ondragleave = () => row.classList.remove("drop");
    row.ondrop = (e) => {
      e.preventDefault();
      const from = Number(e.dataTransfer.getData("text/plain"));
      if (from !== i) restructure(() => { const [rule] = draft.rules.splice(from, 1); draft.rules.splice(i, 0, rule); }, i);
    };
  });
}

function clearProblems() {
  $$(".invalid").forEach((el) => el.classList.remove("invalid"));
  $$(".field-problem").forEach((el) => el.remove());
}

/** Each problem on the row and field it concerns (and all of them listed under the buttons). */
function showProblems(problems) {
  clearProblems();
  for (const p of problems) {
    let row = null;
    if (p.rule === "default") row = $("#default-target");
    else if (p.rule === "triage") row = $("#triage");
    else if (p.rule === "queues") row = $("#queue-list")?.parentElement;
    else if (/^#\d+$/.test(p.rule)) row = $(`#rule-list .rule[data-index="${Number(p.rule.slice(1)) - 1}"]`);
    else if (p.index !== undefined) row = $(`#rule-list .rule[data-index="${p.index}"]`);
    else row = $$("#rule-list .rule").find((r) => $('[data-field="id"]', r).value.trim() === p.rule) || null;
    if (!row) continue;
    const field = p.field === "default" ? null : $(`[data-field="${p.field}"]`, row);
    const target = field || row;
    target.classList.add("invalid");
    const note = document.createElement("div");
    note.className = "field-problem";
    note.textContent = p.problem;
    const holder = field?.closest("label, fieldset");
    if (holder) holder.appendChild(note);  // under the field, inside its label
    else (field || $(".rule-head", row) || row.firstElementChild).insertAdjacentElement("afterend", note);
  }
  $("#result").innerHTML = `<h3>${t("problems")}</h3><ul class="problems">${problems.map((p) =>
    `<li>${esc(p.rule)}${p.field ? ` · ${esc(p.field)}` : ""}: ${esc(p.problem)}</li>`).join("")}</ul>`;
}

/** A 422's problems, or a shape error's ``$.rules[N].then.priority`` turned into one. */
function problemsOf(err) {
  if (err.body.problems) return err.body.problems;
  const detail = err.body.detail || problemText(err);
  const at = /`\$\.rules\[(\d+)\]\.([\w.]+)`/.exec(detail) || /`\$\.(default|triage)\.([\w.]+)`/.exec(detail);
  if (at && /^\d+$/.test(at[1])) return [{ rule: `#${Number(at[1]) + 1}`, field: at[2], problem: detail }];
  if (at) return [{ rule: at[1], field: `${at[1]}.${at[2]}`, problem: detail }];
  return [{ rule: "", field: "", problem: detail }];
}

async function dryRun() {
  const candidate = current();
  if (!candidate) return;
  clearProblems();
  try {
    const { data } = await api("/v1/routing/rules/dry-run", { method: "POST", body: { rules: candidate, limit: 500 } });
    dryRunFor = JSON.stringify(candidate);
    $("#result").innerHTML = `<div id="diff"><p><b>${data.would_move}</b> ${t("would_move")}, ${data.unchanged} ${t("unchanged")} (${data.examined} ${t("examined")})</p>
      <table><thead><tr><th>${t("from")}</th><th>${t("to")}</th><th>${t("count")}</th><th>${t("examples")}</th></tr></thead><tbody>
      ${data.moves.map((m) => `<tr><td>${esc(m.from)}</td><td>${esc(m.to)}</td><td>${m.count}</td><td>${m.examples.map((e) => `${esc(e.case_number)} (${esc(categoryName(e.category))}, ${esc(e.rule)})`).join(", ")}</td></tr>`).join("")
      || `<tr><td colspan="4" class="muted">${t("none")}</td></tr>`}</tbody></table></div>`;
  } catch (err) {
    if (err instanceof ApiError) showProblems(problemsOf(err)); else throw err;
  }
}

async function save() {
  const candidate = current();
  if (!candidate) return;
  const reason = $("#reason").value.trim();
  if (!reason) { $("#reason").classList.add("invalid"); $("#reason").focus(); toast(t("reason_needed"), "warn"); return; }
  if (dryRunFor !== JSON.stringify(candidate)) { toast(t("dryrun_first"), "warn"); $("#dryrun").focus(); return; }
  try {
    const r = await api("/v1/routing/rules", { method: "PUT", headers: { "If-Match": etag }, body: { rules: candidate, reason } });
    toast(`${t("saved")} ${r.data.version}`);
    await rules();
  } catch (err) {
    if (err instanceof ApiError && err.status === 412) toast(t("conflict"), "bad");
    else if (err instanceof ApiError) showProblems(problemsOf(err));
    else throw err;
  }
}

async function rollback(to) {
  const reason = $("#rollback-reason").value.trim();
  if (!reason) { $("#rollback-reason").classList.add("invalid"); $("#rollback-reason").focus(); toast(t("reason_needed"), "warn"); return; }
  try {
    await api("/v1/routing/rules/rollback", { method: "POST", headers: { "If-Match": etag }, body: { version: to, reason } });
    await rules();
  } catch (err) { toast(problemText(err), "bad"); }
}

function setTab(next) {
  if (next === tab) return;
  if (next === "json") { draft = collect(); $("#rules-text").value = JSON.stringify(draft, null, 2); }
  else {
    try { draft = JSON.parse($("#rules-text").value); } catch (err) { showProblems([{ rule: "", field: "", problem: err.message }]); return; }
    drawForm();
  }
  tab = next;
  $("#rules-form").hidden = tab !== "form";
  $("#rules-json").hidden = tab !== "json";
  $$(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
}

export async function rules() {
  const r = await api("/v1/routing/rules");
  const history = (await api("/v1/routing/rules/history")).data.items;
  draft = r.data.rules; etag = r.etag; version = r.data.version; dryRunFor = null; tab = "form";
  $("#view").innerHTML = `<div class="toolbar"><h2>${t("nav_rules")} — ${t("version")} <span id="version">${version}</span></h2>
      <div class="tabs"><button data-tab="form" class="active">${t("rules_form")}</button><button data-tab="json">${t("rules_json")}</button></div></div>
    <div id="rules-form"></div><div id="rules-json" class="card" hidden><textarea id="rules-text" spellcheck="false"></textarea></div>
    <div class="card sticky"><div class="row"><button class="secondary" id="dryrun">${t("dryrun")}</button>
      <input id="reason" class="grow" placeholder="${esc(t("change_reason"))}"><button id="save">${t("save")}</button></div><div id="result"></div></div>
    <div class="card"><h3>${t("history")}</h3><input id="rollback-reason" placeholder="${esc(t("rollback_reason"))}">
      <table id="history"><thead><tr><th>${t("version")}</th><th>${t("by")}</th><th>${t("at")}</th><th>${t("reason")}</th><th></th></tr></thead><tbody>
      ${history.map((h) => `<tr><td>${h.version}${h.rollback_of != null ? ` ⟲${h.rollback_of}` : ""}</td><td>${esc(h.by)}</td><td>${fmtTime(h.at)}</td>
        <td>${esc(h.reason)}<br><span class="muted">${esc(Object.entries(h.diff || {}).filter(([, v]) => v && (v.length ?? 1)).map(([k, v]) => `${k}${Array.isArray(v) ? `: ${v.join(", ")}` : ""}`).join(" · "))}</span></td>
        <td><button class="secondary rollback" data-version="${h.previous}">${t("rollback")} ${h.previous}</button></td></tr>`).join("")
        || `<tr><td colspan="5" class="muted">${t("none")}</td></tr>`}</tbody></table></div>`;
  drawForm();
  $$(".tabs button").forEach((b) => { b.onclick = () => setTab(b.dataset.tab); });
  $("#dryrun").onclick = dryRun;
  $("#save").onclick = save;
  $("#reason").oninput = () => $("#reason").classList.remove("invalid");
  $$("button.rollback").forEach((b) => { b.onclick = () => rollback(Number(b.dataset.version)); });
}
