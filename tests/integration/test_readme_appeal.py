"""The README's payment-amount appeal, run as written: its shell block against `python -m gateway
run` as `make run` starts it (embedded Redis, the example plugins.toml with its demo payment
records), so the walkthrough cannot drift from what the gateway does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from gateway.embedded_redis import stop_embedded_redis
from tests.conftest import ROOT, free_port
from tests.integration.test_run_command import start_run, stop_run

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("curl") is None,
                                 reason="needs Debian's redis-server and curl")]

BLOCK = re.compile(r"<!-- appeal-walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- appeal-walkthrough:end -->", re.S)


def test_the_readme_walks_an_appeal_from_the_first_message_to_the_refund_notice(tmp_path) -> None:
    script = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert script is not None, "README.md lost its marked appeal walkthrough"
    port = free_port()
    proc, base = start_run(tmp_path / "var", port)
    try:
        env = {**os.environ, "B": base}
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script.group(1)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        stop_run(proc)
        stop_embedded_redis(tmp_path / "var")  # `gateway run` leaves its Redis up for the next run
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "true"  # the duplicate charge confirmed from the payment records
    assert out[1] == '["duplicate_charge_confirmed"]' and out[2] == "8"
    assert re.fullmatch(r"C-\d{8}-\d{6}", out[3])
    assert out[4] == '["charge_screenshot", "bank_statement"]'
    assert out[5].startswith(f"为处理您的案件 {out[3]}，请提供以下材料：扣款截图、银行流水或对账单。")
    assert out[6].startswith("msg_")
    assert out[7].startswith(f"已收到您为案件 {out[3]} 提供的材料：扣款截图、银行流水或对账单。")
    assert out[8] == "awaiting_approval" and out[9] == out[3] and out[10] == "resolved"
    assert out[11].startswith(f"您的案件 {out[3]} 已处理完毕：我们将向您退款 CNY 899.00，方式：原路退回")
    assert '"system_error": 1' in out[12] and '"not_recorded": 0' in out[12]
    assert len(out) == 13
