"""`tripwire breakers …` / `tripwire incidents …` (click CliRunner) against a real worker + broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from helpers.e2e import Tokens
from streams.cli.main import main
from streams.ops.incidents import build_incidents
from helpers.support import Topics, WorkerProc, start_worker, stop_process, wait_for

pytestmark = pytest.mark.broker

RUN = uuid.uuid4().hex[:6]
SCOPE = f"agent:cli-{RUN}/tool:shell"
REASON = f"cli test kill switch {RUN}"


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture(scope="module")
def cli_worker(broker: Any, tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Iterator[WorkerProc]:
    topics = Topics(f"cli-{RUN}")
    w = start_worker(broker, tmp_path_factory.mktemp("cli"), topics, app_id=f"tw-cli-{RUN}", extra_env=tokens.env())
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token from the environment or a stray .tripwire/admin.token."""
    for name in ("TRIPWIRE_TOKEN", "TRIPWIRE_API", "TRIPWIRE_BROKER", "TRIPWIRE_TOPICS__BREAKER_EVENTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "240")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def api(w: WorkerProc, token: str | None, *args: str) -> Result:
    return run("breakers", "--api", w.web, *(("--token", token) if token else ()), *args)


def test_force_open_list_show_and_errors(cli_worker: WorkerProc, tokens: Tokens, tmp_path: Path) -> None:
    w = cli_worker
    # no token at all: 401 with what is needed
    r = api(w, None, "force-open", SCOPE, "--reason", REASON)
    assert r.exit_code == 1 and "401" in r.output and "role operator" in r.output, r.output
    # a viewer may read but not act
    r = api(w, tokens.viewer, "force-open", SCOPE, "--reason", REASON)
    assert r.exit_code == 1 and "403" in r.output and "needs role operator" in r.output, r.output
    # the reason is required by the CLI itself
    r = api(w, tokens.operator, "force-open", SCOPE)
    assert r.exit_code == 2 and "--reason" in r.output

    r = api(w, tokens.operator, "force-open", SCOPE, "--reason", REASON)
    assert r.exit_code == 0, r.output
    assert f"now forced_open (by e2e-operator: {REASON})" in r.output

    r = api(w, tokens.viewer, "list")
    assert r.exit_code == 0, r.output
    assert f"cli-{RUN}" in r.output and "forced_open" in r.output

    doc = json.loads(api(w, tokens.viewer, "list", "--json").output)
    mine = [b for b in doc["breakers"] if b["scope"] == SCOPE]
    assert mine and mine[0]["state"] == "forced_open" and mine[0]["reason"] == REASON and mine[0]["actor"] == "e2e-operator"

    shown = json.loads(api(w, tokens.viewer, "show", SCOPE, "--json").output)
    assert shown["scope"] == SCOPE and shown["state"] == "forced_open"
    r = api(w, tokens.viewer, "show", SCOPE)
    assert r.exit_code == 0 and "forced_open" in r.output and REASON in r.output, r.output

    # approve applies to escalated scopes only: 409 with the current state
    r = api(w, tokens.operator, "approve", SCOPE, "--reason", "let it through", "--ttl", "30m")
    assert r.exit_code == 1 and "409" in r.output and "forced_open" in r.output, r.output
    r = api(w, tokens.operator, "approve", SCOPE, "--reason", "x", "--ttl", "soon")
    assert r.exit_code == 2 and "--ttl" in r.output

    # the admin token file written by `tripwire up` is used when nothing else is given
    (tmp_path / ".tripwire").mkdir()
    (tmp_path / ".tripwire" / "admin.token").write_text(tokens.admin + "\n")
    r = api(w, None, "reset", SCOPE, "--reason", f"cli test done {RUN}", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["breaker"]["state"] == "closed"
    assert tokens.admin not in r.output


def test_unreachable_api_is_a_clear_error() -> None:
    from streams.ops.procutil import free_port

    r = run("breakers", "--api", f"http://127.0.0.1:{free_port()}", "list")
    assert r.exit_code == 1 and "cannot reach the tripwire API" in r.output


def test_incidents_list_and_markdown(cli_worker: WorkerProc, broker: Any) -> None:
    """Runs after the force-open/reset above: one resolved incident for SCOPE, with the reason."""
    w = cli_worker
    args = ("incidents", "--broker", broker.url, "--topic", w.topics.breaker_events)

    def listed() -> dict[str, Any] | None:
        r = run(*args, "list", "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.output)
        hits = [i for i in doc["incidents"] if i["scope"] == SCOPE and i["state"] == "resolved"]
        return hits[0] if hits else None

    inc = wait_for(listed, 20, "the incident in breaker-events")
    assert inc["trigger"].startswith("closed -> forced_open: " + REASON)
    assert inc["actor"] == "e2e-operator"

    table = run(*args, "list")
    assert table.exit_code == 0 and inc["id"] in table.output and f"cli-{RUN}" in table.output

    md = run(*args, "show", inc["id"], "--markdown")
    assert md.exit_code == 0, md.output
    assert md.output.startswith(f"# Incident {inc['id']}")
    assert REASON in md.output and f"cli test done {RUN}" in md.output
    assert "e2e-admin: reset" in md.output and "Resolved" in md.output

    r = run(*args, "show", "inc-nonexistent")
    assert r.exit_code == 1 and "no incident" in r.output


def test_build_incidents_skips_other_records() -> None:
    t = {"type": "transition", "scope": "agent:x", "from": "closed", "to": "forced_open", "action": "force_open",
         "reason": "r", "evidence": {}, "policy_version": "v", "actor": "ann", "ts": 10.0}
    log = build_incidents([json.dumps(t).encode(), b"not json", None,
                           json.dumps({"type": "policy_reload", "ok": True}).encode()])
    assert (len(log.incidents), log.records, log.skipped) == (1, 4, 3)
    assert log.incidents[0].state == "open" and log.find(log.incidents[0].id) is log.incidents[0]
