// The agent's workspace: their queues, what is due soonest, the cases they hold, "claim next".
import { $, $$, api, categoryName, countdown, esc, every, refreshCountdowns, statusPill, t, toast, problemText } from "./core.js";

/** Lease the most urgent case across my queues and open it (the "n" key, the button). */
export async function claimNext() {
  try {
    const r = await api("/v1/queues/claim", { method: "POST" });
    if (r.status === 204 || !r.data) { toast(t("nothing_to_claim"), "warn"); return false; }
    toast(`${t("claimed_ok")} ${r.data.complaint.case_number}`);
    location.hash = `#/case/${encodeURIComponent(r.data.complaint.id)}`;
    return true;
  } catch (err) { toast(problemText(err), "bad"); return false; }
}

function caseRow(c, { lease = false } = {}) {
  return `<tr data-case="${esc(c.id)}" tabindex="0"><td><a href="#/case/${encodeURIComponent(c.id)}">${esc(c.case_number)}</a>
      ${c.formal_complaint ? `<span class="pill bad">${t("formal")}</span>` : ""}${c.tags.includes("handed_back") ? `<span class="pill warn">${t("hand_back")}</span>` : ""}</td>
    <td>${statusPill(c.status)}</td><td>${esc(categoryName(c.category))}</td><td>${esc(c.channel)}</td><td>${esc(c.skill || "")}</td>
    <td>${c.priority}</td><td>${lease ? countdown(c.lease_expires_at) : countdown(c.first_response_due || c.resolution_due)}</td></tr>`;
}

export async function workspace() {
  $("#view").innerHTML = `<div class="toolbar"><h2>${t("nav_work")}</h2>
      <button id="claim-next" title="n">${t("claim_next")} <kbd>n</kbd></button>
      <span class="muted keys">${t("keys_hint")}</span></div>
    <div class="grid2"><div class="card"><h3>${t("my_cases")}</h3><div id="mine"></div></div>
    <div class="card"><h3>${t("my_queues")}</h3><div id="my-queues"></div></div></div>
    <div class="card"><h3>${t("due_soonest")}</h3><div id="due"></div></div>`;
  $("#claim-next").onclick = claimNext;
  const head = `<thead><tr><th>${t("case")}</th><th>${t("status")}</th><th>${t("category")}</th><th>${t("channel")}</th>
    <th>${t("queue")}</th><th>${t("priority")}</th><th></th></tr></thead>`;
  const draw = async () => {
    const { data } = await api("/v1/console/worklist");
    $("#mine").innerHTML = data.mine.length ? `<table>${head}<tbody>${data.mine.map((c) => caseRow(c, { lease: true })).join("")}</tbody></table>`
      : `<p class="muted">${t("none")}</p>`;
    $("#due").innerHTML = data.due.length ? `<table id="due-table">${head}<tbody>${data.due.map((c) => caseRow(c)).join("")}</tbody></table>`
      : `<p class="muted">${t("nothing_to_claim")}</p>`;
    $("#my-queues").innerHTML = `<table id="queues-mine"><thead><tr><th>${t("queue")}</th><th>${t("waiting")}</th><th>${t("awaiting_first")}</th>
      <th>${t("near")}</th><th>${t("breached")}</th></tr></thead><tbody>${data.queues.map((q) => `<tr data-skill="${esc(q.skill)}">
      <td>${esc(q.skill)}</td><td class="depth">${q.depth}</td><td>${q.awaiting_first_response}</td>
      <td class="${q.deadlines_near ? "warn" : ""}">${q.deadlines_near}</td><td class="${q.deadlines_breached ? "bad" : ""}">${q.deadlines_breached}</td></tr>`).join("")}</tbody></table>`;
    $$("tr[data-case]").forEach((row) => { row.onkeydown = (e) => { if (e.key === "Enter") location.hash = `#/case/${encodeURIComponent(row.dataset.case)}`; }; });
    refreshCountdowns();
  };
  await draw();
  every(2000, draw);
}
