// The supervisors' lists: queues (live), complaints, incidents, the service report, quarantine.
import { $, $$, api, categoryName, countdown, esc, every, fmtTime, refreshCountdowns, statusName, statusPill, t, toast, problemText, state } from "./core.js";

export async function queues() {
  const draw = async () => {
    const { data } = await api("/v1/queues");
    $("#view").innerHTML = `<div class="card"><h2>${t("nav_queues")}</h2><table id="queues"><thead><tr><th>${t("queue")}</th>
      <th>${t("depth")}</th><th>${t("oldest")}</th><th>${t("awaiting_first")}</th><th>${t("near")}</th><th>${t("breached")}</th></tr></thead><tbody>
      ${data.items.map((q) => `<tr data-skill="${esc(q.skill)}"><td><a href="#/complaints?skill=${encodeURIComponent(q.skill)}">${esc(q.skill)}</a></td><td class="depth">${q.depth}</td>
        <td>${Math.round(q.oldest_age_seconds)} ${t("seconds")}</td><td>${q.awaiting_first_response}</td>
        <td class="${q.deadlines_near ? "warn" : ""}">${q.deadlines_near}</td>
        <td class="${q.deadlines_breached ? "bad" : ""}">${q.deadlines_breached}</td></tr>`).join("")}
      </tbody></table><p class="muted">${t("updated")} ${fmtTime(new Date().toISOString(), { date: false, seconds: true })}</p></div>`;
  };
  await draw();
  every(1000, draw);
}

export async function complaints() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const { data } = await api("/v1/complaints?limit=100&" + params.toString());
  const sel = (name, values, label) => `<select name="${name}"><option value="">${esc(t(name))}: ${t("all")}</option>${values.map((v) =>
    `<option value="${v}" ${params.get(name) === v ? "selected" : ""}>${esc(label(v))}</option>`).join("")}</select>`;
  $("#view").innerHTML = `<div class="card"><h2>${t("nav_complaints")}</h2><form class="filters" id="filters">
    ${sel("status", ["received", "accepted", "in_progress", "responded", "resolved", "closed", "reopened"], statusName)}
    ${sel("category", Object.keys(state.me.categories), categoryName)}
    <input name="channel" placeholder="${t("channel")}" value="${esc(params.get("channel") || "")}">
    <input name="skill" placeholder="${t("queue")}" value="${esc(params.get("skill") || "")}"><button>${t("filter")}</button></form>
    <table id="complaints"><thead><tr><th>${t("case")}</th><th>${t("status")}</th><th>${t("category")}</th><th>${t("channel")}</th>
    <th>${t("queue")}</th><th>${t("priority")}</th><th>${t("created")}</th><th>${t("first_response")}</th></tr></thead><tbody>
    ${data.items.map((c) => `<tr><td><a href="#/case/${encodeURIComponent(c.id)}">${esc(c.case_number)}</a>${c.repeat_count ? ` <span class="pill">×${c.repeat_count + 1}</span>` : ""}</td>
      <td>${statusPill(c.status)}</td><td>${esc(categoryName(c.category))}</td><td>${esc(c.channel)}</td><td>${esc(c.skill || "")}</td><td>${c.priority}</td>
      <td>${fmtTime(c.created_at)}</td><td>${c.first_responded_at ? fmtTime(c.first_responded_at) : countdown(c.first_response_due)}</td></tr>`).join("")
      || `<tr><td colspan="8" class="muted">${t("none")}</td></tr>`}</tbody></table></div>`;
  refreshCountdowns();
  $("#filters").onsubmit = (e) => {
    e.preventDefault();
    location.hash = "#/complaints?" + new URLSearchParams([...new FormData(e.target)].filter(([, v]) => v));
  };
}

export async function incidents() {
  const { data } = await api("/v1/incidents");
  $("#view").innerHTML = `<div class="card"><h2>${t("nav_incidents")}</h2>${data.items.map((i) => `<div class="card" data-incident="${esc(i.id)}">
    <b>${esc(i.title)}</b> <span class="pill">${esc(i.status)}</span> <span class="muted">${esc(categoryName(i.category))} · ${i.complaint_count} · ${fmtTime(i.created_at)}</span>
    <div class="row"><input class="zh grow" placeholder="${t("answer_zh")}"><input class="en grow" placeholder="${t("answer_en")}">
    <button class="answer">${t("answer")}</button></div></div>`).join("") || `<p class="muted">${t("none")}</p>`}</div>`;
  $$("[data-incident]").forEach((el) => {
    $(".answer", el).onclick = async () => {
      try {
        await api(`/v1/incidents/${encodeURIComponent(el.dataset.incident)}/answer`, { method: "POST", body: { zh: $(".zh", el).value, en: $(".en", el).value } });
        incidents();
      } catch (err) { toast(problemText(err), "bad"); }
    };
  });
}

export async function report() {
  const { data } = await api("/v1/reports/service?days=30");
  const bar = (value, goal) => `<div class="bar goal"><span style="width:${Math.round((value ?? 0) * 100)}%"></span><i style="left:${goal * 100}%"></i></div>
    <span>${value === null ? "–" : (value * 100).toFixed(1) + "%"}</span>`;
  const row = (name, f) => `<tr><td>${esc(name)}</td><td>${f.complaints}</td><td>${bar(f.resolution_rate, 0.95)}</td>
    <td>${bar(f.satisfaction, 0.9)}</td><td>${bar(f.first_response_within_standard, 0.95)}</td>
    <td>${f.first_response_p50_seconds ?? "–"} / ${f.first_response_p90_seconds ?? "–"} ${t("seconds")}</td><td class="${f.deadlines_breached ? "bad" : ""}">${f.deadlines_breached}</td></tr>`;
  const head = `<thead><tr><th></th><th>#</th><th>${t("resolution_rate")} (${t("goal")} 95%)</th><th>${t("satisfaction")} (${t("goal")} 90%)</th>
    <th>${t("fr_within")}</th><th>p50 / p90</th><th>${t("breached")}</th></tr></thead>`;
  $("#view").innerHTML = `<div class="card" id="report"><h2>${t("nav_report")}</h2><table>${head}<tbody>${row(t("all"), data.overall)}
    ${Object.entries(data.by_channel).map(([k, f]) => row(k, f)).join("")}</tbody></table></div>
    <div class="card"><h3>${t("category")}</h3><table>${head}<tbody>${Object.entries(data.by_category).map(([k, f]) => row(categoryName(k), f)).join("")}</tbody></table></div>`;
}

export async function quarantine() {
  const { data } = await api("/v1/quarantine");
  $("#view").innerHTML = `<div class="card"><h2>${t("nav_quarantine")}</h2><table><thead><tr><th>${t("channel")}</th><th>${t("reason")}</th>
    <th>${t("size")}</th><th>${t("at")}</th><th></th></tr></thead><tbody>${data.items.map((q) => `<tr data-q="${esc(q.id)}"><td>${esc(q.channel)}</td>
    <td>${esc(q.reason)}</td><td>${q.raw_size}</td><td>${fmtTime(q.received_at)}</td><td>
    ${q.message_id ? `<button class="secondary retry">${t("retry")}</button>` : ""} <button class="secondary discard">${t("discard")}</button></td></tr>`).join("")
    || `<tr><td colspan="5" class="muted">${t("none")}</td></tr>`}</tbody></table></div>`;
  $$("[data-q]").forEach((el) => {
    const retry = $(".retry", el);
    if (retry) retry.onclick = async () => { await api(`/v1/quarantine/${el.dataset.q}/retry`, { method: "POST" }); quarantine(); };
    $(".discard", el).onclick = async () => { await api(`/v1/quarantine/${el.dataset.q}`, { method: "DELETE" }); quarantine(); };
  });
}
