// Small SVG charts (no library): lines with an optional standard line, and bars. Then the
// supervisors' dashboard built from /v1/console/charts and /v1/console/trend.
import { $, api, esc, every, fmtTime, state, t } from "./core.js";

const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d"];
const W = 560, H = 190, PAD = { l: 44, r: 10, t: 10, b: 26 };

function axes(labels, yMax, fmtY) {
  const ticks = [0, 0.5, 1].map((f) => {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - f);
    return `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y}" y2="${y}" class="grid"/>
      <text x="${PAD.l - 6}" y="${y + 4}" text-anchor="end">${esc(fmtY(yMax * f))}</text>`;
  }).join("");
  const step = Math.max(1, Math.ceil(labels.length / 6));
  const xs = labels.map((label, i) => i % step ? "" :
    `<text x="${x(i, labels.length)}" y="${H - 8}" text-anchor="middle">${esc(label)}</text>`).join("");
  return ticks + xs;
}
/** A top for the y axis whose half is a whole number too (counts never read 0, 1, 1). */
const roundTop = (max) => Math.max(2, 2 * Math.ceil((max * 1.1) / 2));
const x = (i, n) => PAD.l + (n <= 1 ? 0 : (W - PAD.l - PAD.r) * i / (n - 1));
const y = (v, yMax) => PAD.t + (H - PAD.t - PAD.b) * (1 - (yMax ? v / yMax : 0));

function legend(series) {
  return `<div class="legend">${series.map((s, i) => `<span><i style="background:${s.color || COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("")}</div>`;
}

/** series: [{name, values (numbers or null)}]; goal: a dashed standard line. */
export function lineChart(id, labels, series, { fmtY = (v) => Math.round(v), goal = null, yMax = null } = {}) {
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  const top = yMax ?? roundTop(Math.max(goal ?? 0, ...all));
  const lines = series.map((s, i) => {
    let d = "", pen = false;
    s.values.forEach((v, j) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(j, labels.length).toFixed(1)},${y(v, top).toFixed(1)}`;
      pen = true;
    });
    return `<path d="${d}" fill="none" stroke="${s.color || COLORS[i % COLORS.length]}" stroke-width="2"/>`;
  }).join("");
  const goalLine = goal === null ? "" : `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(goal, top)}" y2="${y(goal, top)}" class="goal"/>`;
  return `<figure class="chart" id="${id}"><svg viewBox="0 0 ${W} ${H}" role="img">${axes(labels, top, fmtY)}${goalLine}${lines}</svg>${legend(series)}</figure>`;
}

/** Stacked bars: series of counts per label. */
export function barChart(id, labels, series) {
  const totals = labels.map((_, j) => series.reduce((sum, s) => sum + (s.values[j] || 0), 0));
  const top = roundTop(Math.max(...totals));
  const n = labels.length, slot = (W - PAD.l - PAD.r) / Math.max(1, n), bw = Math.max(2, slot * 0.7);
  const bars = labels.map((_, j) => {
    let base = 0;
    return series.map((s, i) => {
      const v = s.values[j] || 0;
      if (!v) return "";
      const y0 = y(base + v, top), h = y(base, top) - y0;
      base += v;
      return `<rect x="${(PAD.l + slot * j + (slot - bw) / 2).toFixed(1)}" y="${y0.toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[i % COLORS.length]}"><title>${esc(s.name)}: ${v}</title></rect>`;
    }).join("");
  }).join("");
  const xs = (i) => PAD.l + slot * i + slot / 2;
  const step = Math.max(1, Math.ceil(n / 6));
  const labelsSvg = labels.map((l, i) => i % step ? "" : `<text x="${xs(i)}" y="${H - 8}" text-anchor="middle">${esc(l)}</text>`).join("");
  const grid = [0, 0.5, 1].map((f) => `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(top * f, top)}" y2="${y(top * f, top)}" class="grid"/><text x="${PAD.l - 6}" y="${y(top * f, top) + 4}" text-anchor="end">${Math.round(top * f)}</text>`).join("");
  return `<figure class="chart" id="${id}"><svg viewBox="0 0 ${W} ${H}" role="img">${grid}${bars}${labelsSvg}</svg>${legend(series)}</figure>`;
}

const pct = (v) => `${Math.round(v * 100)}%`;

export async function dashboard() {
  const hours = Number(sessionStorage.getItem("console-dash-hours") || 6);
  $("#view").innerHTML = `<div class="toolbar"><h2>${t("nav_dashboard")}</h2>
    <label>${t("last_hours")} <select id="dash-hours">${[1, 6, 24, 72].map((h) => `<option value="${h}" ${h === hours ? "selected" : ""}>${h}</option>`).join("")}</select> ${t("hours")}</label>
    <span class="muted" id="dash-updated"></span></div>
    <div class="grid2" id="dash"></div><div class="card" id="trend"></div>`;
  $("#dash-hours").onchange = (e) => { sessionStorage.setItem("console-dash-hours", e.target.value); dashboard(); };
  const draw = async () => {
    const [{ data: c }, { data: tr }] = await Promise.all([api(`/v1/console/charts?hours=${hours}`), api("/v1/console/trend?days=14")]);
    const labels = c.points.map((p) => fmtTime(p, { date: hours > 24 }));
    const queues = Object.entries(c.queues), channels = Object.entries(c.channels);
    const standards = channels.map(([, v]) => v.standard_seconds);
    const standard = standards.length ? Math.min(...standards) : null;
    $("#dash").innerHTML = `
      <div class="card"><h3>${t("dash_depth")}</h3>${lineChart("chart-depth", labels, queues.map(([q, v]) => ({ name: q, values: v.depth })))}</div>
      <div class="card"><h3>${t("dash_fr")}</h3>${lineChart("chart-fr", labels, channels.map(([ch, v]) => ({ name: `${ch} (${t("standard")} ${v.standard_seconds}${t("seconds")})`, values: v.first_response_p50_seconds })), { goal: standard, fmtY: (v) => `${Math.round(v)}${t("seconds")}` })}</div>
      <div class="card"><h3>${t("dash_breaches_q")}</h3>${barChart("chart-breaches-q", labels, queues.map(([q, v]) => ({ name: q, values: v.breaches })))}</div>
      <div class="card"><h3>${t("dash_breaches_ch")}</h3>${barChart("chart-breaches-ch", labels, channels.map(([ch, v]) => ({ name: ch, values: v.breaches })))}</div>
      <div class="card"><h3>${t("dash_fr_share")}</h3>${lineChart("chart-fr-share", labels, channels.map(([ch, v]) => ({ name: ch, values: v.first_response_within_standard })), { yMax: 1, goal: 0.95, fmtY: pct })}</div>
      <div class="card"><h3>${t("dash_arrivals")}</h3>${barChart("chart-arrivals", labels, channels.map(([ch, v]) => ({ name: ch, values: v.arrivals })))}</div>`;
    const days = tr.days.map((d) => d.day.slice(5));
    $("#trend").innerHTML = `<h3>${t("dash_trend")} <span class="muted">(${esc(tr.timezone)})</span></h3><div class="grid2">
      ${lineChart("chart-trend", days, [
        { name: `${t("resolution_rate")} (${t("goal")} 95%)`, values: tr.days.map((d) => d.resolution_rate) },
        { name: `${t("satisfaction")} (${t("goal")} 90%)`, values: tr.days.map((d) => d.satisfaction) },
        { name: t("fr_within"), values: tr.days.map((d) => d.first_response_within_standard) }], { yMax: 1, goal: 0.95, fmtY: pct })}
      ${barChart("chart-trend-n", days, [{ name: t("complaints_n"), values: tr.days.map((d) => d.complaints) },
                                          { name: t("breached"), values: tr.days.map((d) => d.breaches) }])}</div>`;
    $("#dash-updated").textContent = `${t("updated")} ${fmtTime(new Date().toISOString(), { date: false, seconds: true })} · ${state.me.timezone}`;
  };
  await draw();
  every(10_000, draw);
}
