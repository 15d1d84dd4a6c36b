"""A real Prometheus scraping a real ``tripwire up`` stack with traffic: every dashboard panel
query returns data, the shipped rules load and evaluate cleanly, and ``tripwire snapshot`` renders
the on-call overview from it.

One stack per module (~60-90 s in total): ``tripwire up --rate 300 --first-bad-after 3`` (embedded
broker, worker, synthetic agents; one agent goes bad three seconds in, so breakers escalate and
open, drift and incidents show) and a Prometheus with the shipped rule files
(deploy/prometheus/rules/*.yml) scraping the worker every second. The group ``interval`` of the
shipped rules (30 s / 5 m) is dropped so every rule evaluates each second (as in
tests/observability/test_prometheus_live.py); everything else is the shipped text.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from breakers.operators import generate_token, hash_token
from observability.dashboards import load_dashboards, panel_queries, variable_queries
from streams.ops.procutil import free_port
from helpers.support import REPO, require_binary, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"

#: Panels that may be empty after a one-minute run, each with the reason. Keys: (dashboard title,
#: panel title). Everything else must return data.
MAY_BE_EMPTY: dict[tuple[str, str], str] = {
    ("tripwire / Agent detail", "annotation: Drift"):
        "fires on increase(...[2m]) > 0 of tripwire_drift_detected_total: the counter series is created at its "
        "first detection, and increase() cannot see a series' first increment, so it needs a second drift "
        "report of the same agent/signal within the run (the panel 'Drift detections' is checked instead)",
    ("tripwire / Agent detail", "Consistency@K (pass^k)"):
        "pass^k is exported for trial-shaped agents only (shape=\"trial\"); in the one-agent stack the agent is "
        "support-bot, whose attempts are retries (the multi-agent stack's billing-agent runs trials and fills it)",
    **{("tripwire / On-call overview", panel): "no drill runs in this stack (no drill scope is ever non-closed, no "
       "drill alert fires); the drill row's queries return data in tests/observability/test_prometheus_live.py"
       for panel in ("Drill breakers not closed", "Firing drill alerts")},
}
#: an operator allowed to report drill results (POST /v1/drills); the token lives only in this process
OPERATOR_TOKEN = generate_token()


# ---------------------------------------------------------------------------------- processes
@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    web: str
    out: Path
    started: float

    def output(self) -> str:
        return self.out.read_text(errors="replace")


@dataclass
class Prom:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path


def _start_stack(tmp: Path) -> Stack:
    web_port = free_port()
    out = tmp / "up.out"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), COLUMNS="200",
               TRIPWIRE_OPERATORS=json.dumps([{"name": "e2e-oncall", "role": "operator",
                                               "token_sha256": hash_token(OPERATOR_TOKEN)}]))
    argv = [sys.executable, "-m", "streams.cli", "up", "--broker-port", str(free_port()), "--web-port", str(web_port),
            "--data-dir", str(tmp / "data"), "--rate", "300", "--first-bad-after", "3"]
    with open(out, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    stack = Stack(proc, f"http://127.0.0.1:{web_port}", out, time.monotonic())

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tripwire up exited with {proc.returncode}:\n{stack.output()[-3000:]}")
        return "tripwire is up" in stack.output()

    try:
        wait_for(up, 90, "tripwire up to print 'tripwire is up'")
    except AssertionError:
        _stop(proc)
        raise
    return stack


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _shipped_rules(tmp: Path) -> list[str]:
    files = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        target = tmp / path.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(target))
    return files


def _start_prometheus(tmp: Path, target: str) -> Prom:
    binary = require_binary("prometheus")
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": _shipped_rules(tmp),
        "scrape_configs": [{"job_name": "tripwire", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = tmp / "prometheus.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdout=fh, stderr=subprocess.STDOUT)
    prom = Prom(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
        return httpx.get(f"{prom.base}/-/ready", timeout=1).status_code == 200

    wait_for(ready, 30, "prometheus /-/ready")
    return prom


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prom-real")


@pytest.fixture(scope="module")
def stack(tmp: Path) -> Iterator[Stack]:
    s = _start_stack(tmp)
    yield s
    _stop(s.proc)


@pytest.fixture(scope="module")
def prom(tmp: Path, stack: Stack) -> Iterator[Prom]:
    p = _start_prometheus(tmp, stack.web.removeprefix("http://"))
    with httpx.Client(base_url=stack.web, timeout=5) as client:
        # gateways asking: authz counters and the authz latency histogram get real observations
        for i in range(20):
            client.get("/v1/authz", headers={"X-Agent-Id": ("support-bot", "research-agent")[i % 2],
                                             "X-Tool": "email.send"})
        # a passing drill reported the way `tripwire drill` does: the drill panels get data
        r = client.post("/v1/drills", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                        json={"drill_id": "e2e-prometheus-drill", "result": "pass", "finished_at": time.time(),
                              "scope": "agent:drill-e2e", "profile": "e2e"})
        assert r.status_code == 200 and r.json()["counted"], r.text
    yield p
    _stop(p.proc, signal.SIGTERM)


# ------------------------------------------------------------------------------------ checker
def query(base: str, expr: str) -> dict:
    return httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()


def check_queries(base: str, queries: list[tuple[str, str, str]],
                  may_be_empty: Mapping[tuple[str, str], str] = MAY_BE_EMPTY) -> tuple[list[str], list[str], int]:
    """(failures, allowed-empty notes, how many returned data) for (dashboard, panel, expr) triples."""
    failures, allowed, with_data = [], [], 0
    for dashboard, panel, expr in queries:
        res = query(base, expr)
        if res.get("status") != "success":
            failures.append(f"ERROR {dashboard} / {panel}: {res.get('error')} :: {expr}")
        elif res["data"]["result"]:
            with_data += 1
        elif (dashboard, panel) in may_be_empty:
            allowed.append(f"{dashboard} / {panel}: {may_be_empty[dashboard, panel]}")
        else:
            failures.append(f"EMPTY {dashboard} / {panel} :: {expr}")
    return failures, allowed, with_data


def dashboard_queries(variables: Mapping[str, str]) -> list[tuple[str, str, str]]:
    out = []
    for dash in load_dashboards().values():
        out.extend(panel_queries(dash, variables))
        out.extend(variable_queries(dash, variables))
    return out


def _open_scopes(base: str) -> set[str]:
    """Scopes whose breaker Prometheus currently sees open."""
    res = query(base, 'max by (scope) (tripwire_breaker_state{state="open"}) == 1')
    return {r["metric"]["scope"] for r in res["data"]["result"]}


@pytest.fixture(scope="module")
def bad_agent(prom: Prom, stack: Stack) -> str:
    """The agent whose breaker opened, once Prometheus has seen it (waits for it)."""
    scopes = wait_for(lambda: _open_scopes(prom.base), 100, "an open breaker in Prometheus")
    agents = sorted(s.split("agent:", 1)[1].split("/", 1)[0] for s in scopes if "agent:" in s)
    assert agents, scopes
    with httpx.Client(base_url=stack.web, timeout=5) as client:  # a gateway asks for the cut-off agent: denied
        scope = sorted(s for s in scopes if f"agent:{agents[0]}" in s)[0]
        tool = scope.split("/tool:", 1)[1] if "/tool:" in scope else "email.send"
        for _ in range(5):
            client.get("/v1/authz", headers={"X-Agent-Id": agents[0], "X-Tool": tool})
    return agents[0]


# -------------------------------------------------------------------------------------- tests
def test_shipped_rules_load_and_evaluate_cleanly(prom: Prom) -> None:
    # group names repeat across files (tripwire-service), so key by (file, group)
    shipped = {(p.name, g["name"]): [r.get("record") or r.get("alert") for r in g["rules"]]
               for p in sorted(RULES_DIR.glob("*.yml")) for g in yaml.safe_load(p.read_text())["groups"]}

    def evaluated() -> list[dict]:
        groups = httpx.get(f"{prom.base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        never = [r for r in rules if r.get("lastEvaluation", "0001").startswith("0001")]  # Go zero time
        return groups if rules and not never else []

    groups = wait_for(evaluated, 30, "every rule evaluated once")
    loaded = {(Path(g["file"]).name, g["name"]): [r["name"] for r in g["rules"]] for g in groups}
    assert loaded == shipped
    assert shipped
    bad = [(g["name"], r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"]
           if r["health"] != "ok" or r.get("lastError")]
    assert not bad, bad


@pytest.mark.parametrize("setting", ["all", "one-agent"])
def test_every_dashboard_panel_returns_data(prom: Prom, bad_agent: str, setting: str) -> None:
    """Every panel, annotation and variable query of every dashboard, with the variables at "All"
    and with the agent whose breaker opened selected."""
    variables = {"agent": bad_agent} if setting == "one-agent" else {}
    queries = dashboard_queries(variables)
    assert len(queries) > 50
    state: dict[str, tuple[list[str], list[str], int]] = {}

    def all_have_data() -> bool:
        state["r"] = check_queries(prom.base, queries)
        return not state["r"][0]

    try:
        wait_for(all_have_data, 45, "every dashboard query to return data", interval=1.0)
    except AssertionError:
        pass
    failures, allowed, with_data = state["r"]
    print(f"\n[{setting}] {with_data}/{len(queries)} queries returned data; allowed empty: {len(allowed)}")
    for note in allowed:
        print("  allowed empty:", note)
    assert not failures, "\n".join(failures)


def test_checker_flags_a_made_up_metric(prom: Prom, bad_agent: str) -> None:
    """Negative control: a panel on a metric the service does not export is reported EMPTY, and a
    broken expression ERROR, while a real one passes."""
    queries = [("control", "made-up metric", 'sum(rate(tripwire_made_up_metric_total{agent=~".*"}[1m]))'),
               ("control", "broken expr", "sum(rate(tripwire_events_total[1m])"),
               ("control", "real metric", "sum(rate(tripwire_events_total[1m]))")]
    failures, allowed, with_data = check_queries(prom.base, queries)
    assert with_data == 1 and not allowed
    assert [f.split(" ", 1)[0] for f in failures] == ["EMPTY", "ERROR"], failures
    assert "made-up metric" in failures[0] and "broken expr" in failures[1]


def test_alerts_fire_for_the_bad_agent(prom: Prom, bad_agent: str) -> None:
    def firing() -> list[dict]:
        alerts = httpx.get(f"{prom.base}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing" and bad_agent in a["labels"].get("scope", "")]

    alerts = wait_for(firing, 30, f"a firing breaker alert for {bad_agent}")
    assert {a["labels"]["drill"] for a in alerts} == {"false"}


def test_snapshot_from_real_prometheus(prom: Prom, bad_agent: str, tmp: Path) -> None:
    out = tmp / "snapshot.html"
    open_before = _open_scopes(prom.base)
    r = subprocess.run([sys.executable, "-m", "streams.cli", "snapshot", "--prometheus", prom.base,
                        "--range", "5m", "--out", str(out)],
                       capture_output=True, text=True, timeout=60, cwd=str(REPO),
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    rows = dict(re.findall(r'<tr data-scope="([^"]+)" data-state="([^"]+)"', page))
    # open breakers stay open for their cool-down (5 min): what was open before is in the table
    assert open_before and open_before <= {s for s, st in rows.items() if st == "open"}, (open_before, rows)
    assert any(st == "open" and bad_agent in s for s, st in rows.items()), rows
    assert page.count("<svg") == 2 and page.count("</svg>") == 2
    assert page.count('class="series"') >= 2  # lines drawn: budgets and near-miss rates
    assert "no data in this range" not in page
    _assert_self_contained(page)


def test_snapshot_unreachable_prometheus_is_a_clear_error(tmp: Path) -> None:
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "streams.cli", "snapshot", "--prometheus", f"http://127.0.0.1:{port}",
                        "--out", str(tmp / "never.html")], capture_output=True, text=True, timeout=60,
                       cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 1
    assert f"cannot reach Prometheus at http://127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp / "never.html").exists()


def test_up_stops_cleanly_on_sigint(stack: Stack, prom: Prom) -> None:
    """Last: Ctrl-C stops broker, worker and traffic; exit code 0."""
    assert _stop(stack.proc, signal.SIGINT, timeout=40) == 0, stack.output()[-3000:]
    assert "stopped." in stack.output()


# --------------------------------------------------------------------------------- helpers
class _Refs(html.parser.HTMLParser):
    """Collects tags and attribute values that could load something from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attr_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if value and (re.search(r"(?i)\b(https?:|//|url\()", value) or name in ("src", "href", "xlink:href")):
                self.attr_urls.append(f"<{tag} {name}={value!r}>")


def _assert_self_contained(page: str) -> None:
    refs = _Refs()
    refs.feed(page)
    assert not refs.attr_urls, refs.attr_urls
    assert not refs.tags & {"script", "link", "img", "iframe", "object", "embed", "image", "use"}, refs.tags
    style = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "url(" not in style and "@import" not in style
