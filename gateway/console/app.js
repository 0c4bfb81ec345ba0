// Sign-in, the navigation for each role, the screens by URL (#/...), the language switch, keys.
import { claimNext, workspace } from "./agent.js";
import { caseKey, caseView } from "./case.js";
import { dashboard } from "./charts.js";
import { $, $$, api, esc, leaveScreen, problemText, signOut, state, t } from "./core.js";
import { complaints, incidents, queues, quarantine, report } from "./pages.js";
import { rules } from "./rules.js";

const NAV = {
  agent: [["work", workspace]],
  supervisor: [["dashboard", dashboard], ["work", workspace], ["queues", queues], ["complaints", complaints],
               ["incidents", incidents], ["rules", rules], ["report", report], ["quarantine", quarantine]],
};

function showLogin(message = "") {
  $("#top").hidden = true;
  $("#view").innerHTML = `<div id="login" class="card"><h2>${t("signin_title")} · ${t("title")}</h2>
    <form id="login-form"><label>${t("token")}<input id="token" type="password" autocomplete="off"></label>
    <p class="bad" id="login-error">${esc(message)}</p><button type="submit">${t("signin")}</button></form></div>`;
  $("#token").focus();
  $("#login-form").onsubmit = async (e) => {
    e.preventDefault();
    state.token = $("#token").value.trim();
    try {
      state.me = (await api("/v1/console/me", { quiet: true })).data;
      sessionStorage.setItem("console-token", state.token);
      location.hash = state.me.role === "supervisor" ? "#/dashboard" : "#/work";
    } catch {
      state.token = "";
      showLogin(t("bad_login"));
    }
  };
}

function drawHeader() {
  const me = state.me;
  $("#top").hidden = false;
  $("#title").textContent = t("title");
  $("#nav").innerHTML = NAV[me.role].map(([name]) => `<a href="#/${name}" data-nav="${name}">${t(`nav_${name}`)}</a>`).join("");
  $("#who").textContent = `${t("signed_in_as")} ${me.id} (${t(`role_${me.role}`)})`;
  $("#logout").textContent = t("logout");
  $("#lang").value = state.lang;
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
}

async function route() {
  leaveScreen();
  if (!state.token) return showLogin();
  try {
    if (!state.me) state.me = (await api("/v1/console/me")).data;
  } catch { return showLogin(); }
  drawHeader();
  const [path] = (location.hash || "").slice(1).split("?");
  const screens = NAV[state.me.role];
  $$("#nav a").forEach((a) => a.classList.toggle("active", path === `/${a.dataset.nav}`));
  try {
    if (path.startsWith("/case/")) return await caseView(decodeURIComponent(path.slice(6)));
    const found = screens.find(([name]) => path === `/${name}`);
    if (!found) { location.hash = `#/${screens[0][0]}`; return; }
    await found[1]();
  } catch (err) {
    $("#view").innerHTML = `<div class="card bad" id="error">${esc(problemText(err))}</div>`;
  }
}

function typing(target) { return target.closest("input, textarea, select, [contenteditable]"); }

document.addEventListener("keydown", (e) => {
  if (!state.me || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "Escape") {
    if (typing(e.target)) { e.target.blur(); return; }
    if (location.hash.startsWith("#/case/")) location.hash = "#/work";
    return;
  }
  if (typing(e.target)) return;
  if (e.key === "n") { e.preventDefault(); claimNext(); return; }
  if (location.hash.startsWith("#/case/") && caseKey(e)) e.preventDefault();
});

$("#lang").onchange = (e) => { state.lang = e.target.value; localStorage.setItem("console-lang", state.lang); route(); };
$("#logout").onclick = () => { signOut(); };
window.addEventListener("hashchange", route);
route();
