"""End to end against a real Alertmanager (Debian package prometheus-alertmanager)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from streams.worker.alertmanager import ALERT_ESCALATED, ALERT_OPEN, AsyncAlertmanager

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    if BINARY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus-alertmanager binary missing (apt-get install prometheus-alertmanager)")
        pytest.skip("prometheus-alertmanager binary not installed (apt-get install prometheus-alertmanager)")
    d = tmp_path_factory.mktemp("am")
    (d / "am.yml").write_text(CONFIG)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(d / "am.log", "wb")
    proc = subprocess.Popen(
        [BINARY, f"--config.file={d / 'am.yml'}", f"--storage.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"alertmanager exited: {(d / 'am.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"alertmanager not ready in 30s: {(d / 'am.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _alerts(url: str, scope: str) -> list[dict]:
    quoted = scope.replace("\\", "\\\\").replace('"', '\\"')
    r = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'scope="{quoted}"'}, timeout=5)
    r.raise_for_status()
    return r.json()


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    return pred()


def test_fire_read_back_resolve(alertmanager):
    scope = 'tenant:acme/agent:bot "1"/tool:payments.refund'

    async def body():  # the checks block the loop on purpose: nothing else runs on it
        async with AsyncAlertmanager(alertmanager, repost_interval=60, generator_url="http://tw/v1/breakers") as am:
            await am.fire(scope, summary="weighted near-miss burn 18.2x over 1h", evidence={"1h": {"tool_calls": 210}},
                          budget="weighted-near-miss", drill=False)
            got = _wait_for(lambda: _alerts(alertmanager, scope))
            assert len(got) == 1
            a = got[0]
            assert a["labels"]["alertname"] == ALERT_ESCALATED
            assert a["labels"]["agent"] == 'bot "1"' and a["labels"]["tool"] == "payments.refund"
            assert a["labels"]["tenant"] == "acme" and a["labels"]["drill"] == "false"
            assert a["labels"]["budget"] == "weighted-near-miss" and a["labels"]["severity"] == "page"
            assert a["annotations"]["summary"].startswith("weighted near-miss")
            assert a["status"]["state"] == "active"
            assert a["generatorURL"].startswith("http://tw/v1/breakers/")
            assert await am.repost_due(time.time() + 61) == 1
            await am.resolve(scope)
            assert _wait_for(lambda: _alerts(alertmanager, scope) == [])

    asyncio.run(body())


def test_fire_and_resolve_async_drill(alertmanager):
    scope = "agent:drill-42"

    async def fire():
        async with AsyncAlertmanager(alertmanager) as am:
            await am.fire(scope, summary="drill: opened", alertname=ALERT_OPEN, drill=True)
            return am.active

    asyncio.run(fire())
    got = _wait_for(lambda: _alerts(alertmanager, scope))
    assert got[0]["labels"]["alertname"] == ALERT_OPEN and got[0]["labels"]["drill"] == "true"

    async def resolve():
        async with AsyncAlertmanager(alertmanager) as am:
            await am.resolve(scope, alertname=ALERT_OPEN, drill=True)

    asyncio.run(resolve())
    assert _wait_for(lambda: _alerts(alertmanager, scope) == [])
