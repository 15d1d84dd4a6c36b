"""Alertmanager config: amtool check-config, routing tree cases, and a live inhibition/routing test."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from .catalogue import alert_rules
from .conftest import AM_DIR, free_port, require_binary, run

AM_CONFIG = AM_DIR / "alertmanager.yml"
PAGER_RECEIVERS = {"tripwire-page"}

# (labels, expected receivers in order)
ROUTE_CASES = [
    ({"alertname": "TripwireBreakerOpen", "severity": "page", "drill": "false", "scope": "agent:a1"}, ["tripwire-page"]),
    ({"alertname": "TripwireBurnRatePage", "severity": "page", "drill": "false", "scope": "tenant:acme/agent:a1"}, ["tripwire-page"]),
    ({"alertname": "TripwireBreakerOpen", "severity": "page", "drill": "true", "scope": "agent:drill-1"}, ["tripwire-drill"]),
    ({"alertname": "TripwireBurnRatePage", "severity": "page", "drill": "true", "scope": "tenant:t/agent:drill-9/tool:x"}, ["tripwire-drill"]),
    ({"alertname": "TripwireBurnRateTicket", "severity": "ticket", "drill": "true"}, ["tripwire-drill"]),
    ({"alertname": "TripwireBreakerForcedOpen", "severity": "info", "drill": "true"}, ["tripwire-drill"]),
    ({"alertname": "TripwireConsumerLagHigh", "severity": "ticket", "drill": "false"}, ["tripwire-tickets"]),
    ({"alertname": "TripwireBreakerForcedOpen", "severity": "info", "drill": "false"}, ["tripwire-info"]),
    ({"alertname": "TripwireWorkerDown", "severity": "page"}, ["tripwire-page"]),
    # alerts posted by the worker itself (streams/worker/alertmanager.py): no `service`, extra scope labels
    ({"alertname": "TripwireBreakerEscalated", "scope": "tenant:acme/agent:a1/tool:shell", "severity": "page",
      "drill": "false", "agent": "a1", "tool": "shell", "tenant": "acme", "budget": "nm"}, ["tripwire-page"]),
    ({"alertname": "TripwireBreakerOpen", "scope": "agent:drill-3/tool:shell", "severity": "page",
      "drill": "true", "agent": "drill-3", "tool": "shell", "budget": "nm"}, ["tripwire-drill"]),
    ({"alertname": "SomethingElse", "severity": "warning"}, ["tripwire-tickets"]),
    ({"alertname": "NoSeverity"}, ["tripwire-tickets"]),
]


def _routes_test(amtool: str, labels: dict[str, str], expected: list[str]):
    args = [f"{k}={v}" for k, v in labels.items()]
    return run([amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}",
                f"--verify.receivers={','.join(expected)}", *args])


def test_amtool_check_config(amtool):
    res = run([amtool, "check-config", str(AM_CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.parametrize("labels,expected", ROUTE_CASES, ids=lambda x: ",".join(f"{k}={v}" for k, v in x.items()) if isinstance(x, dict) else None)
def test_amtool_routes(amtool, labels, expected):
    res = _routes_test(amtool, labels, expected)
    assert res.returncode == 0, f"{labels} -> {res.stdout.strip()} (expected {expected})\n{res.stderr}"


def test_amtool_routes_detects_mismatch(amtool):
    """Guard against a vacuous --verify.receivers: a wrong expectation must fail."""
    res = _routes_test(amtool, {"severity": "page", "drill": "true"}, ["tripwire-page"])
    assert res.returncode != 0


def _expected_receiver(severity: str, drill: str) -> str:
    if drill == "true":
        return "tripwire-drill"
    return {"page": "tripwire-page", "ticket": "tripwire-tickets", "info": "tripwire-info"}[severity]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_shipped_alert_routes(amtool, rule):
    """Each alert of deploy/prometheus/rules reaches the receiver its severity/drill labels mean."""
    labels = rule["labels"]
    drills = [labels["drill"]] if "drill" in labels else ["false", "true"]
    for drill in drills:
        lab = {"alertname": rule["alert"], "severity": labels["severity"], "service": "tripwire", "drill": drill}
        expected = _expected_receiver(labels["severity"], drill)
        res = _routes_test(amtool, lab, [expected])
        assert res.returncode == 0, f"{lab} -> {res.stdout.strip()} (expected {expected})"


def test_drill_route_first_and_final():
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    first = cfg["route"]["routes"][0]
    assert first["receiver"] == "tripwire-drill"
    assert first.get("matchers") == ['drill="true"']
    assert first.get("continue", False) is False
    assert not first.get("routes"), "drill route must not have child routes"
    drill = next(r for r in cfg["receivers"] if r["name"] == "tripwire-drill")
    assert set(drill) == {"name", "webhook_configs"}, "drill receiver must only call webhooks"


def test_secrets_only_from_files():
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    page = next(r for r in cfg["receivers"] if r["name"] == "tripwire-page")
    assert page["pagerduty_configs"][0].get("routing_key_file")
    assert "routing_key" not in page["pagerduty_configs"][0] and "service_key" not in page["pagerduty_configs"][0]
    assert page["opsgenie_configs"][0].get("api_key_file") and "api_key" not in page["opsgenie_configs"][0]
    for r in cfg["receivers"]:
        for sc in r.get("slack_configs", []):
            assert sc.get("api_url_file") and "api_url" not in sc
    # the placeholder files named in the config exist in deploy/alertmanager/secrets/
    text = AM_CONFIG.read_text()
    for name in ("pagerduty_routing_key", "opsgenie_api_key", "slack_webhook_url"):
        assert f"/etc/alertmanager/secrets/{name}" in text
        assert (AM_DIR / "secrets" / name).read_text().strip().startswith(("dummy", "http://127.0.0.1"))


# ---------------------------------------------------------------- live Alertmanager


class _Sink:
    """Webhook receiver standing in for every real receiver: records (receiver, alertnames, labels)."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for alert in body["alerts"]:
                    sink.received.append((self.path.strip("/"), alert["labels"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _test_config(sink_port: int) -> dict:
    """The shipped config with routes and inhibitions unchanged, receivers swapped for the sink."""
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    for r in cfg["receivers"]:
        name = r["name"]
        r.clear()
        r.update(name=name, webhook_configs=[{"url": f"http://127.0.0.1:{sink_port}/{name}", "send_resolved": False}])

    def fast(route):
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    return cfg


@pytest.fixture
def alertmanager(tmp_path):
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    sink = _Sink()
    cfg_path = tmp_path / "alertmanager.yml"
    cfg_path.write_text(yaml.safe_dump(_test_config(sink.port)))
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "w")
    import subprocess

    proc = subprocess.Popen(
        [binary, f"--config.file={cfg_path}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"alertmanager did not start: {(tmp_path / 'alertmanager.log').read_text()}")
            time.sleep(0.1)
        yield base, sink
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        sink.close()


def test_live_routing_and_inhibition(alertmanager):
    base, sink = alertmanager
    common = {"service": "tripwire", "job": "tripwire"}
    alerts = [
        # breaker open for a1 -> page; inhibits the burn-rate alerts of a1
        {"alertname": "TripwireBreakerOpen", "severity": "page", "drill": "false", "scope": "agent:a1"},
        {"alertname": "TripwireBurnRatePage", "severity": "page", "drill": "false", "scope": "agent:a1", "budget": "nm"},
        {"alertname": "TripwireBurnRateTicket", "severity": "ticket", "drill": "false", "scope": "agent:a1", "budget": "nm"},
        # a2: no breaker open -> burn page delivered; its ticket inhibited by the page (same budget)
        {"alertname": "TripwireBurnRatePage", "severity": "page", "drill": "false", "scope": "agent:a2", "budget": "nm"},
        {"alertname": "TripwireBurnRateTicket", "severity": "ticket", "drill": "false", "scope": "agent:a2", "budget": "nm"},
        # a2, other budget: not inhibited
        {"alertname": "TripwireBurnRateTicket", "severity": "ticket", "drill": "false", "scope": "agent:a2", "budget": "cost"},
        # drill traffic: never reaches the pager
        {"alertname": "TripwireBreakerOpen", "severity": "page", "drill": "true", "scope": "agent:drill-1"},
        {"alertname": "TripwireBurnRatePage", "severity": "page", "drill": "true", "scope": "agent:drill-2", "budget": "nm"},
        {"alertname": "TripwireBreakerForcedOpen", "severity": "info", "drill": "false", "scope": "tool:shell"},
    ]
    payload = [{"labels": {**common, **a}, "annotations": {"summary": a["alertname"]}} for a in alerts]
    assert httpx.post(f"{base}/api/v2/alerts", json=payload, timeout=5).status_code == 200

    def key(labels):
        return (labels["alertname"], labels.get("scope"), labels.get("budget"))

    expected = {
        ("TripwireBreakerOpen", "agent:a1", None): "tripwire-page",
        ("TripwireBurnRatePage", "agent:a2", "nm"): "tripwire-page",
        ("TripwireBurnRateTicket", "agent:a2", "cost"): "tripwire-tickets",
        ("TripwireBreakerOpen", "agent:drill-1", None): "tripwire-drill",
        ("TripwireBurnRatePage", "agent:drill-2", "nm"): "tripwire-drill",
        ("TripwireBreakerForcedOpen", "tool:shell", None): "tripwire-info",
    }
    inhibited = {
        ("TripwireBurnRatePage", "agent:a1", "nm"),
        ("TripwireBurnRateTicket", "agent:a1", "nm"),
        ("TripwireBurnRateTicket", "agent:a2", "nm"),
    }
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = {key(lab) for _, lab in sink.received}
        if set(expected) <= got:
            break
        time.sleep(0.2)
    time.sleep(2.5)  # a couple more group intervals: anything inhibited would have shown up by now

    delivered = {}
    for receiver, labels in sink.received:
        delivered.setdefault(key(labels), set()).add(receiver)
    for k, receiver in expected.items():
        assert delivered.get(k) == {receiver}, f"{k}: delivered to {delivered.get(k)}, expected {receiver}"
    for k in inhibited:
        assert k not in delivered, f"{k} should be inhibited, was delivered to {delivered[k]}"
    # no drill alert ever reached a pager receiver
    for receiver, labels in sink.received:
        if labels.get("drill") == "true":
            assert receiver not in PAGER_RECEIVERS

    # Alertmanager's own view agrees: the three are suppressed by inhibition
    state = httpx.get(f"{base}/api/v2/alerts", timeout=5).json()
    status = {key(a["labels"]): a["status"] for a in state}
    for k in inhibited:
        assert status[k]["state"] == "suppressed" and status[k]["inhibitedBy"], (k, status[k])
