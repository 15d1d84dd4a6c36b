"""On-call CLI against a real broker and worker (issue #17): `replay`'s summary is what the worker accepts,
`tripwire dlq` reads what it dead-letters, `breakers list` finds the token of `--data-dir` and folds long
scopes at 100 columns."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from helpers.e2e import Tokens
from helpers.support import Topics, WorkerProc, shared_data, start_worker, stop_process, wait_for
from streams.cli.main import main

pytestmark = pytest.mark.broker

RUN = uuid.uuid4().hex[:6]


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture(scope="module")
def oncall_worker(broker: Any, tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> Iterator[WorkerProc]:
    topics = Topics(f"oncall-{RUN}")
    w = start_worker(broker, tmp_path_factory.mktemp("oncall"), topics, app_id=f"tw-oncall-{RUN}",
                     extra_env={**tokens.env(), "TRIPWIRE_METRICS_CACHE_S": "0"})
    yield w
    stop_process(w.proc)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TRIPWIRE_TOKEN", "TRIPWIRE_API", "TRIPWIRE_BROKER", "TRIPWIRE_CONFIG", "TRIPWIRE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_replay_summary_matches_the_worker_and_dlq_reads_its_rejects(oncall_worker: WorkerProc, broker: Any,
                                                                      tmp_path: Path) -> None:
    w = oncall_worker
    toolemu = shared_data("toolemu-trace-v1.jsonl")
    common = ("--broker", broker.url, "--topic", w.topics.traces)
    r = run("replay", str(toolemu), *common, "--rebase-time", "--batch", "50")
    assert r.exit_code == 1 and "nothing sent" in r.output, r.output
    r = run("replay", str(toolemu), *common, "--rebase-time", "--batch", "50", "--skip-invalid")
    assert r.exit_code == 0, r.output
    assert "sent 6960 events" in r.output and "skipped 12 the worker would dead-letter (schema 12)" in r.output
    wait_for(lambda: w.metric("tripwire_events_total") >= 6960, 90, "the replayed events counted")
    # what replay said it sent is exactly what the worker accepted: no reject, none missing (rebased
    # timestamps included: none lands past max_future_skew_s)
    assert w.metric("tripwire_events_total") == 6960
    assert w.metric("tripwire_events_rejected_total") == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"not json\n\x1b[2Jgone\n" + json.dumps(
        {"schema_version": "1", "event_id": f"x-{RUN}", "ts": 1_700_000_000_000, "agent_id": "a", "kind": "nope"}
    ).encode() + b"\n")
    r = run("replay", str(bad), *common, "--send-invalid")
    assert r.exit_code == 0 and "3 of them the worker will dead-letter" in r.output, r.output
    wait_for(lambda: w.metric("tripwire_events_rejected_total") >= 3, 30, "the three rejects")

    dlq = ("dlq", "--broker", broker.url, "--topic", w.topics.dlq)
    counted = wait_for(lambda: (lambda d: d if d["records"] >= 3 else None)(json.loads(run(*dlq, "count",
                                                                                             "--json").output)),
                       30, "the DLQ records")
    assert counted["by_reason"] == {"invalid_json": 2, "unknown_kind": 1}
    tail = json.loads(run("dlq", "tail", "-n", "3", "--broker", broker.url, "--topic", w.topics.dlq, "--json").output)
    payloads = {r["reason"] + ":" + r["payload"]["encoding"]: r["payload"] for r in tail["records"]}
    assert sorted(payloads) == ["invalid_json:base64", "invalid_json:utf-8", "unknown_kind:utf-8"]
    # the escape sequence is kept as base64 (not shown raw), printable bytes as text
    assert payloads["invalid_json:base64"]["base64"] == base64.b64encode(b"\x1b[2Jgone").decode()
    assert payloads["invalid_json:utf-8"]["text"] == "not json"
    assert json.loads(payloads["unknown_kind:utf-8"]["text"])["kind"] == "nope"
    assert len(json.loads(run(*dlq, "tail", "-n", "1", "--json").output)["records"]) == 1
    shown = run(*dlq, "tail")
    assert shown.exit_code == 0 and "\x1b[2J" not in shown.output and "not json" in shown.output


def column_text(rendered: str, col: int) -> str:
    pieces = [cells[col + 1].strip() for line in rendered.splitlines() if len(cells := line.split("│")) > col + 1]
    return "".join(pieces).replace(" ", "")


def test_breakers_list_finds_the_data_dir_token_and_folds_long_scopes(oncall_worker: WorkerProc,
                                                                       tokens: Tokens, tmp_path: Path) -> None:
    w = oncall_worker
    scope = f"tenant:acme-europe-west/agent:customer-support-escalation-bot-{RUN}/tool:crm.update_record"
    reason = f"on-call CLI test {RUN}: " + "the gateway logs show repeated writes to the wrong customer " * 3
    r = run("breakers", "force-open", scope, "--reason", reason.strip(), "--api", w.web, "--token", tokens.operator)
    assert r.exit_code == 0, r.output
    assert run("breakers", "list", "--api", w.web).exit_code == 1  # no token anywhere: 401
    data_dir = tmp_path / "elsewhere"
    data_dir.mkdir()
    (data_dir / "admin.token").write_text(tokens.admin + "\n")
    r = run("breakers", "list", "--api", w.web, "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    assert scope.replace(" ", "") in column_text(r.output, 0)
    assert reason.replace(" ", "") in column_text(r.output, 5)
    r = run("breakers", "reset", scope, "--reason", "done", "--api", w.web, "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
