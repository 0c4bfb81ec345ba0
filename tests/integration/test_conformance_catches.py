"""The conformance suite catches a broken channel, and the example channel stands on its own.

Each variant below is the example package (examples/signed_webhook_channel) with one mistake an
integrator could make, written into a directory of its own with the example's own tests; pytest
runs the suite's check for that mistake against it, in a process of its own, as an integrator's
package runs it, and the check must fail, saying what is wrong. The examples as shipped (this
one and examples/line_channel), copied out of this repository with their own pyproject, pass
every one of their tests there: this is where the examples' tests run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
EXAMPLE = ROOT / "examples" / "signed_webhook_channel"
CHANNEL_SOURCE = EXAMPLE / "signed_webhook_channel" / "__init__.py"
TESTS_SOURCE = EXAMPLE / "tests" / "test_signed_webhook.py"
SIGNATURE_CHECK = "            if not same_secret(request.headers.get(\"x-signature\"), sign(settings.secret, timestamp, body)):"

#: (variant, [(text in the example, its broken replacement)], the suite's check, what it says)
VARIANTS = [
    ("no_idempotency_key",
     [('idempotency_scope=f"id:{message.provider_message_id}"', "idempotency_scope=None")],
     "test_a_retry_makes_no_second_message_and_no_second_acknowledgement", "stored 3 messages"),
    ("missing_signature_accepted",
     [(SIGNATURE_CHECK, SIGNATURE_CHECK.replace("if not", 'if "x-signature" in request.headers and not'))],
     "test_an_unsigned_request_is_refused_and_stores_nothing", "an unsigned request got 202"),
    ("seen_signature_trusted",  # "a signature seen before needs no check": the body is not checked again
     [(SIGNATURE_CHECK, SIGNATURE_CHECK.replace("if not", 'if request.headers.get("x-signature") not in SEEN and not')),
      ("            check_fresh(", '            SEEN.add(request.headers.get("x-signature"))\n            check_fresh('),
      ("MAX_BODY = 64 * 1024\n", "MAX_BODY = 64 * 1024\nSEEN: set = set()\n")],
     "test_a_body_changed_after_signing_is_refused_and_stores_nothing", "a body changed after signing got 202"),
    ("signature_not_checked",
     [(SIGNATURE_CHECK, SIGNATURE_CHECK.replace("if not", "if False and not"))],
     "test_a_wrong_secret_is_refused_and_stores_nothing", "signed with the wrong secret got 202"),
    ("no_body_limit",
     [("bounded_body(request, MAX_BODY)", "bounded_body(request, 1024 * MAX_BODY)")],
     "test_a_body_over_the_limit_is_refused_and_stores_nothing", "not 413"),
    ("batch_refusal_swallowed",  # a message the desk refused is dropped, the rest answered 202
     [("                await services.intake.submit(message, idempotency_scope=f\"id:{message.provider_message_id}\", "
       "raw=body)",
       "                try:\n                    await services.intake.submit(message, idempotency_scope="
       "f\"id:{message.provider_message_id}\", raw=body)\n                except ProblemError:\n"
       "                    pass")],
     "test_a_batch_is_taken_once_each_even_when_refused_halfway", "a batch the desk refused halfway was answered 202"),
    ("read_receipts_taken",
     [('if event.type == "message"]', 'if event.type in ("message", "read")]'),
      ('            text = clean_text(event.text,', '            text = clean_text(event.text or "(read)",')],
     "test_events_that_are_not_messages_make_nothing", "made a complaint"),
    ("replies_to_the_case_number",
     [('"to": message.to.value', '"to": message.case_number')],
     "test_a_retry_makes_no_second_message_and_no_second_acknowledgement", "not the customer"),
    ("callback_unsigned",
     [('"X-Signature": sign(self.settings.secret, timestamp, body)', '"X-Signature": ""')],
     "test_the_sender_delivers_a_reply_and_retries_only_what_is_worth_retrying", "not the channel's credential"),
    ("never_retries",
     [("            return http_failure(response)",
       '            return DeliveryResult(status="failed", error="refused", retryable=False)')],
     "test_the_sender_delivers_a_reply_and_retries_only_what_is_worth_retrying", "answered 503 was tried 1 times"),
    ("retries_everything",
     [("            return http_failure(response)",
       '            return DeliveryResult(status="failed", error="refused", retryable=True)')],
     "test_the_sender_delivers_a_reply_and_retries_only_what_is_worth_retrying", "refused (400) was tried 2 times"),
]


def run_pytest(cwd: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a process of its own, from ``cwd``, as an integrator runs it (the gateway's test
    kit found through its pytest11 entry point, nothing from this repository's configuration)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTEST_"))}
    env["TEST_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def write_variant(folder: Path, variant: str, edits: list[tuple[str, str]]) -> str:
    source = CHANNEL_SOURCE.read_text()
    for old, new in edits:
        assert source.count(old) == 1, f"{variant}: the example no longer contains {old!r}"
        source = source.replace(old, new)
    module = f"channel_{variant}"
    (folder / f"{module}.py").write_text(source)
    tests = TESTS_SOURCE.read_text().replace("from signed_webhook_channel import", f"from {module} import")
    (folder / f"test_{variant}.py").write_text(tests)
    return f"test_{variant}.py"


def test_each_broken_variant_of_the_example_fails_the_check_for_its_mistake(tmp_path, redis_url):
    nodes = {variant: f"{write_variant(tmp_path, variant, edits)}::TestSignedWebhookConformance::{check}"
             for variant, edits, check, _ in VARIANTS}
    report = tmp_path / "report.xml"
    result = run_pytest(tmp_path, redis_url, f"--junitxml={report}", *nodes.values())
    failures = {f"{case.get('classname')}.{case.get('name')}": (case.find("failure").get("message") or "")
                for case in ElementTree.parse(report).iter("testcase") if case.find("failure") is not None}
    for variant, _, check, says in VARIANTS:
        key = f"test_{variant}.TestSignedWebhookConformance.{check}"
        assert key in failures, f"the suite passes the broken variant {variant}:\n{result.stdout[-3000:]}"
        assert says in failures[key], f"{variant}: {failures[key]}"


@pytest.mark.parametrize("example, module", [("signed_webhook_channel", "signed_webhook_channel"),
                                             ("line_channel", "line_channel")])
def test_the_example_copied_out_of_the_repository_passes_its_own_tests(tmp_path, redis_url, example, module):
    package = tmp_path / example
    shutil.copytree(ROOT / "examples" / example, package, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    where = subprocess.run([sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
                           cwd=package, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(package)), where  # the copy is what its tests import
    result = run_pytest(package, redis_url)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-1000:]
