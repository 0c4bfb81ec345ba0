"""The console in a real browser: Debian's chromium driven by Playwright (executable_path; nothing
is downloaded), against real `gateway serve` and `gateway worker` processes (one pair for the
module). This module: a supervisor's screens — the dashboard, the live queues, the rule editor (a
rule added with the form, problems on their row and field, the dry run, a required reason, the
rollback), the lists, in English and Chinese. Screenshots of every screen go to
test-artifacts/console/ (Chinese rendered with Debian's fonts-noto-cjk)."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest

from tests.conftest import APP_KEY, ROOT, SUPERVISOR, SUPERVISOR_TOKEN
from tests.desk import desk_processes, wait_until

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "test-artifacts" / "console"
CJK_FONT = "Noto Sans CJK"


@pytest.fixture(scope="module")
def browser():
    """One chromium for the module's tests (each test opens its own contexts)."""
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed (make test installs it)")
    if CJK_FONT not in subprocess.run(["fc-list"], capture_output=True, text=True).stdout:
        pytest.fail("Debian's fonts-noto-cjk is not installed (make test installs it): Chinese would not render")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def desk(redis_url, tmp_path_factory):
    with desk_processes(redis_url, tmp_path_factory.mktemp("console")) as started:
        yield started


def signed_in(browser, base: str, token: str, *, lang: str = "en"):
    """A fresh browser context signed in with ``token``; page errors are collected in page.errors."""
    context = browser.new_context(viewport={"width": 1360, "height": 960}, locale="en-GB")
    context.add_init_script(f"localStorage.setItem('console-lang', '{lang}')")
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(f"{base}/console")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#nav a")
    return page


def send(base: str, user: str, text: str, **extra) -> str:
    r = httpx.post(f"{base}/v1/messages", json={"user_id": user, "text": text, **extra},
                   headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=5)
    assert r.status_code == 202, r.text
    return r.json()["message_id"]


def processed(base: str, mid: str) -> str:
    """The complaint a message became, once the worker processed it."""
    def done():
        state = httpx.get(f"{base}/v1/messages/{mid}", headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=5).json()
        return state.get("complaint_id") if state["status"] == "processed" else None
    return wait_until(done, timeout=20)


def test_a_supervisor_watches_the_desk_and_adds_a_rule_with_the_form(desk, browser):
    base, _logs = desk
    # a wrong token first
    context = browser.new_context(viewport={"width": 1360, "height": 960})
    page = context.new_page()
    page.goto(f"{base}/console")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:has-text('not valid')")
    page.screenshot(path=str(SHOTS / "01-sign-in.png"))
    context.close()

    page = signed_in(browser, base, SUPERVISOR_TOKEN)
    page.wait_for_selector("#chart-depth")  # a supervisor lands on the dashboard
    page.click("#nav a[data-nav='queues']")
    page.wait_for_selector("#queues")
    page.evaluate("window.__marker = 'same page'")
    formal_fee = processed(base, send(base, "browser-fee", "我要正式投诉：你们多收了我5元手续费，手续费不合理",
                                      category_hint="fee_dispute"))
    processed(base, send(base, "browser-pay", "我被重复扣款了128元，请退款"))
    page.wait_for_selector("#queues tr[data-skill='payments'] td.depth:text-is('1')", timeout=10_000)
    assert page.evaluate("window.__marker") == "same page"  # live, without a reload
    page.screenshot(path=str(SHOTS / "02-queues-live.png"))
    fee = httpx.get(f"{base}/v1/complaints/{formal_fee}", headers=SUPERVISOR).json()
    assert fee["formal_complaint"] and fee["category"] == "fee_dispute", fee
    old_queue = fee["skill"]

    page.click("#nav a[data-nav='dashboard']")
    page.wait_for_selector("#chart-depth path", state="attached")
    charts = httpx.get(f"{base}/v1/console/charts?hours=6", headers=SUPERVISOR).json()
    assert charts["queues"]["payments"]["depth"][-1] == 1, charts["queues"]  # what the line ends on
    page.wait_for_selector("#chart-trend-n rect")
    page.screenshot(path=str(SHOTS / "03-dashboard.png"), full_page=True)

    # the rule editor: a broken rule first, its problem shown on its row and field
    page.click("#nav a[data-nav='rules']")
    page.wait_for_selector("#rule-list .rule")
    page.click("#add-rule")
    broken = page.locator("#rule-list .rule").last
    broken.locator("[data-field='id']").fill("broken")
    broken.locator("[data-field='when.regex']").fill("([")
    page.click("#dryrun")
    page.wait_for_selector("#rule-list .rule[data-rule='broken'] .field-problem")
    assert "regular expression" in broken.locator(".field-problem").inner_text()
    assert "invalid" in broken.locator("[data-field='when.regex']").get_attribute("class")
    page.screenshot(path=str(SHOTS / "04-rules-problem.png"))
    broken.locator("[data-move='remove']").click()

    # formal complaints about fees go to a new queue at top priority
    page.fill("#new-queue", "formal-fees")
    page.click("#add-queue")
    page.click("#add-rule")
    rule = page.locator("#rule-list .rule").last
    rule.locator("[data-field='id']").fill("formal-fee-complaints")
    rule.locator("[data-field='description']").fill("Formal complaints about fees: the senior desk, first")
    rule.locator("[data-field='when.categories'] input[value='fee_dispute']").check()
    rule.locator("[data-field='when.formal']").select_option("yes")
    rule.locator("[data-field='then.skill']").select_option("formal-fees")
    rule.locator("[data-field='then.priority']").select_option("9")
    rule.locator("[data-move='top']").click()
    first = page.locator("#rule-list .rule").first
    assert first.get_attribute("data-rule") == "formal-fee-complaints"
    page.click("#dryrun")
    page.wait_for_selector("#diff")
    diff = page.inner_text("#diff")
    assert old_queue in diff and "formal-fees" in diff and fee["case_number"] in diff, diff
    page.screenshot(path=str(SHOTS / "05-rules-dry-run.png"))  # the new rule on top, the dry run below
    page.click("#save")  # no reason yet: refused, the field marked
    page.wait_for_selector("#reason.invalid")
    page.fill("#reason", "formal fee complaints need the senior desk")
    page.click("#save")
    page.wait_for_selector("#version:text-is('1')")
    active = httpx.get(f"{base}/v1/routing/rules", headers=SUPERVISOR).json()
    assert active["rules"]["rules"][0] == {
        "id": "formal-fee-complaints", "description": "Formal complaints about fees: the senior desk, first",
        "when": {"categories": ["fee_dispute"], "formal": True}, "then": {"skill": "formal-fees", "priority": 9}}
    assert "formal-fees" in active["rules"]["queues"]
    page.click(".tabs button[data-tab='json']")  # the JSON view shows the same rule set
    assert json.loads(page.input_value("#rules-text"))["rules"][0]["id"] == "formal-fee-complaints"
    page.click(".tabs button[data-tab='form']")
    page.screenshot(path=str(SHOTS / "06-rules-saved.png"))

    page.fill("#rollback-reason", "back to the built-in table")
    page.click("button.rollback[data-version='0']")
    page.wait_for_selector("#version:text-is('2')")
    assert "back to the built-in table" in page.inner_text("#history")
    assert not any(r["id"] == "formal-fee-complaints"
                   for r in httpx.get(f"{base}/v1/routing/rules", headers=SUPERVISOR).json()["rules"]["rules"])
    page.screenshot(path=str(SHOTS / "07-rules-rolled-back.png"))

    # the other screens, and Chinese throughout
    page.click("#nav a[data-nav='complaints']")
    page.wait_for_selector("#complaints a")
    page.screenshot(path=str(SHOTS / "08-complaints.png"))
    page.click(f"#complaints a:has-text('{fee['case_number']}')")  # a supervisor reads a case too
    page.wait_for_selector("#case #thread .msg.in")
    assert "手续费" in page.inner_text("#thread")
    for name in ("report", "incidents", "quarantine"):
        page.click(f"#nav a[data-nav='{name}']")
        page.wait_for_selector("main .card h2")
    page.select_option("#lang", "zh")
    page.click("#nav a[data-nav='dashboard']")
    page.wait_for_selector("#chart-depth")
    assert "监控看板" in page.inner_text("header") and "队列积压" in page.inner_text("#view")
    page.screenshot(path=str(SHOTS / "09-dashboard-zh.png"), full_page=True)
    page.click("#nav a[data-nav='rules']")
    page.wait_for_selector("#rule-list .rule")
    assert "手续费争议" in page.inner_text("#rule-list")  # category names in the chosen language
    page.screenshot(path=str(SHOTS / "10-rules-zh.png"))
    page.click("#nav a[data-nav='complaints']")
    page.wait_for_selector("#complaints a")
    assert "手续费争议" in page.inner_text("#complaints")
    page.screenshot(path=str(SHOTS / "11-complaints-zh.png"))
    assert not page.errors, page.errors
