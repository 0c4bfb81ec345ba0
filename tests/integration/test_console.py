"""The supervisors' console in a real browser: Debian's chromium driven by Playwright
(executable_path; nothing is downloaded), against the real `gateway serve` and `gateway worker`
processes. Screenshots of every page are kept in test-artifacts/console/."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.conftest import APP_KEY, ROOT, SUPERVISOR_TOKEN
from tests.integration.test_processes import gateway_processes  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "test-artifacts" / "console"


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def send(base: str, user: str, text: str) -> str:
    r = httpx.post(f"{base}/v1/messages", json={"user_id": user, "text": text},
                   headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=5)
    assert r.status_code == 202
    return r.json()["message_id"]


def test_a_supervisor_watches_edits_dry_runs_saves_rolls_back_and_opens_a_case(gateway_processes, browser):  # noqa: F811
    base, _logs = gateway_processes
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # log in (a wrong token first)
    page.goto(f"{base}/console")
    page.fill("#token", "not-a-supervisor")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:has-text('not a supervisor')")
    page.fill("#token", SUPERVISOR_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#queues")
    page.screenshot(path=str(SHOTS / "01-queues-empty.png"))

    # a complaint arrives and shows up in its queue without a reload
    page.evaluate("window.__marker = 'same page'")
    send(base, "browser-1", "我被重复扣款了128元，请退款")
    page.wait_for_selector("#queues tr[data-skill='payments'] td.depth:text-is('1')", timeout=10_000)
    assert page.evaluate("window.__marker") == "same page"  # no reload happened
    page.screenshot(path=str(SHOTS / "02-queues-live.png"))

    # the complaints list and a case
    page.click("nav a[href='#/complaints']")
    page.wait_for_selector("#complaints a")
    page.screenshot(path=str(SHOTS / "03-complaints.png"))
    page.click("#complaints a")
    page.wait_for_selector("#case h3")
    assert "payment_amount" in page.inner_text("#case") and "routed" in page.inner_text("#case")
    page.screenshot(path=str(SHOTS / "04-case.png"))

    # edit a rule: first something invalid (validation messages), then a real change
    page.click("nav a[href='#/rules']")
    page.wait_for_selector("#rules-text")
    rules = json.loads(page.input_value("#rules-text"))
    broken = {**rules, "default": {"skill": "nowhere"}}
    page.fill("#rules-text", json.dumps(broken))
    page.click("#dryrun")
    page.wait_for_selector(".problems li")
    assert "nowhere" in page.inner_text(".problems")
    page.screenshot(path=str(SHOTS / "05-rules-invalid.png"))
    changed = {**rules, "queues": [*rules["queues"], "refunds"],
               "rules": [{"id": "refunds", "when": {"keywords": ["退款", "refund"]}, "then": {"skill": "refunds"}},
                         *rules["rules"]]}
    page.fill("#rules-text", json.dumps(changed, indent=2))
    page.click("#dryrun")
    page.wait_for_selector("#diff")
    diff = page.inner_text("#diff")
    assert "1" in diff and "payments" in diff and "refunds" in diff  # the case above would move
    page.screenshot(path=str(SHOTS / "06-rules-dry-run.png"))
    page.fill("#reason", "refunds desk opens")
    page.click("#save")
    page.wait_for_selector("#version:text-is('1')")
    page.screenshot(path=str(SHOTS / "07-rules-saved.png"))
    page.click("button.rollback[data-version='0']")
    page.wait_for_selector("#version:text-is('2')")
    assert "rollback from the console" in page.inner_text("#history")
    page.screenshot(path=str(SHOTS / "08-rules-rolled-back.png"))

    # the other pages render, in Chinese too
    for name in ("report", "incidents", "quarantine"):
        page.click(f"nav a[href='#/{name}']")
        page.wait_for_selector("main .card h2")
        page.screenshot(path=str(SHOTS / f"09-{name}.png"))
    page.select_option("#lang", "zh")
    page.click("nav a[href='#/queues']")
    page.wait_for_selector("#queues")
    assert "队列" in page.inner_text("header") and "等待" in page.inner_text("#queues")
    page.screenshot(path=str(SHOTS / "10-queues-zh.png"))
    assert not errors, errors
