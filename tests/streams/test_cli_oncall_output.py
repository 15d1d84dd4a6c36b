"""On-call CLI output (issue #17): tables fold instead of cutting ids, `--json [FILE]`, options after the
subcommand, token discovery that follows the data directory, `up` refusing a busy port, ASCII headers,
`tripwire dlq` decoding. No broker (the broker-backed checks are in test_cli_oncall_broker.py)."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from breakers.authz import Decision
from streams.cli.breakers import breakers_table, incidents_table, token_file_of
from streams.cli.main import main
from streams.contract.decode import Reject
from streams.contract.dlq import dlq_record
from streams.ops.dlq import counts, decode_payload, parse_record, sample
from streams.ops.procutil import free_port

LONG_SCOPE = "tenant:acme-europe-west/agent:customer-support-escalation-bot-production-7f3a9c/tool:crm.update_record"
LONG_REASON = ("near_miss_rate burn 31.2x over 1h (>14.4) and 40.0x over 5m; " * 5).strip()


def column_text(rendered: str, col: int) -> str:
    """The text of body column ``col`` of a rich table, folded pieces joined, spaces dropped."""
    pieces = []
    for line in rendered.splitlines():
        cells = line.split("│")
        if len(cells) > col + 1:
            pieces.append(cells[col + 1].strip())
    return "".join(pieces).replace(" ", "")


def render(table: object, width: int) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_breakers_table_never_cuts_scopes_or_reasons() -> None:
    doc = {"policy_version": "v1", "breakers": [
        {"scope": LONG_SCOPE, "state": "open", "since": 1.7e9, "age_s": 65, "budget": "near-miss-burn",
         "reason": LONG_REASON, "evidence": {"burn_rates": {"1h": 31.2, "5m": 40.0}}}]}
    for width in (100, 120):
        out = render(breakers_table(doc), width)
        assert "…" not in out
        assert column_text(out, 0) == LONG_SCOPE.replace(" ", "")
        assert column_text(out, 5) == LONG_REASON.replace(" ", "")


def test_incidents_table_never_cuts_ids() -> None:
    rows = [{"id": "inc-" + "9f" * 20, "scope": LONG_SCOPE, "opened_at": 1.7e9, "state": "open", "now": "open",
             "trigger": "closed -> open: " + LONG_REASON}]
    out = render(incidents_table(rows, "breaker-events"), 100)
    assert "…" not in out
    assert column_text(out, 0) == rows[0]["id"] and column_text(out, 1) == LONG_SCOPE


def test_options_are_accepted_after_the_subcommand() -> None:
    port = free_port()
    for args in (["breakers", "list", "--api", f"http://127.0.0.1:{port}"],
                 ["breakers", "--api", "http://127.0.0.1:1", "show", "agent:x", "--api", f"http://127.0.0.1:{port}"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1, r.output
        assert f"cannot reach the tripwire API at http://127.0.0.1:{port} " in r.output
    r = CliRunner().invoke(main, ["incidents", "list", "--broker", "kafka://127.0.0.1:1", "--timeout", "1"])
    assert r.exit_code == 1 and "127.0.0.1:1" in r.output
    r = CliRunner().invoke(main, ["dlq", "count", "--broker", "kafka://127.0.0.1:1"])
    assert r.exit_code == 1 and "127.0.0.1:1" in r.output


def test_token_discovery_follows_the_data_dir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TRIPWIRE_CONFIG", raising=False)
    assert token_file_of(tmp_path / "x") == tmp_path / "x" / "admin.token"
    monkeypatch.setenv("TRIPWIRE_DATA_DIR", str(tmp_path / "env"))
    assert token_file_of(None) == tmp_path / "env" / "admin.token"
    monkeypatch.delenv("TRIPWIRE_DATA_DIR")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'cfg'}\n")
    monkeypatch.setenv("TRIPWIRE_CONFIG", str(cfg))
    assert token_file_of(None) == tmp_path / "cfg" / "admin.token"


def test_json_to_stdout_or_to_a_file(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["policy", "check", "deploy/policy/default.yaml", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True
    out = tmp_path / "cfg.json"
    r = CliRunner().invoke(main, ["config", "show", "--json", str(out)])
    assert r.exit_code == 0 and json.loads(out.read_text())["web_port"] == 6066
    assert json.loads(CliRunner().invoke(main, ["config", "show", "--json"]).output)["topics"]["dlq"] == \
        "agent-traces-dlq"
    tok = tmp_path / "tok.json"
    r = CliRunner().invoke(main, ["token", "new", "--name", "ann", "--role", "viewer", "--json", str(tok)])
    assert r.exit_code == 0
    doc = json.loads(tok.read_text())
    assert doc["token"] not in r.output and stat.S_IMODE(tok.stat().st_mode) == 0o600
    from breakers.operators import hash_token

    assert doc["entry"] == {"name": "ann", "role": "viewer", "token_sha256": hash_token(doc["token"])}


def test_backtest_json_file_keeps_working(tmp_path: Path) -> None:
    traces = tmp_path / "t.jsonl"
    traces.write_text(json.dumps({"schema_version": "1", "event_id": "e1", "ts": 1_700_000_000_000,
                                  "agent_id": "a", "kind": "tool_call", "tool": "search", "status": "ok"}) + "\n")
    out = tmp_path / "bt.json"
    r = CliRunner().invoke(main, ["backtest", "--traces", str(traces), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["events"] == 1
    r = CliRunner().invoke(main, ["backtest", "--traces", str(traces), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["events"] == 1


def test_up_refuses_a_busy_web_port_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = CliRunner().invoke(main, ["up", "--web-port", str(port), "--data-dir", str(tmp_path / "d"),
                                      "--no-traffic"])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == (f"Error: the worker HTTP port 127.0.0.1:{port} is already in use (another "
                                "`tripwire up` or worker?); stop that process or pick a free port with --web-port")
    assert not (tmp_path / "d").exists()


def test_reason_header_is_readable_ascii() -> None:
    reason = "near_miss_rate burn 31.2× over 1h (>14.4); P(X≥3 | λ=0.05) ≤ 0.001; agent “é”"
    header = Decision(False, 403, reason, "open", "agent:a").headers["X-Tripwire-Reason"]
    header.encode("ascii")  # an HTTP header value any client shows as is
    assert header == r"near_miss_rate burn 31.2x over 1h (>14.4); P(X>=3 | lambda=0.05) <= 0.001; agent \u201c\xe9\u201d"


def test_dlq_records_decode_the_original_bytes_only_when_safe() -> None:
    def record(value: bytes, reason: str = "schema") -> bytes:
        return dlq_record(Reject(reason, "ts: missing"), topic="agent-traces", partition=2, offset=41,
                          key=b"agent-1", value=value, payload_limit=16 * 1024)

    text = parse_record(record(b'{"kind": "tool_call", "tool": "caf\xc3\xa9"}'), 0, 5)
    assert text.reason == "schema" and text.payload == {"text": '{"kind": "tool_call", "tool": "café"}',
                                                         "base64": None, "encoding": "utf-8"}
    assert text.key["text"] == "agent-1" and text.source == {"topic": "agent-traces", "partition": 2, "offset": 41,
                                                              "index": None}
    for unsafe in (b"\xff\xfe", b"ok\x1b[2Jgone", "rtl\u202eevil".encode()):
        rec = parse_record(record(unsafe, "invalid_json"), 0, 6)
        assert rec.payload["encoding"] == "base64"
        assert base64.b64decode(rec.payload["base64"]) == unsafe
    assert decode_payload(base64.b64encode(b"line\twith tab\n").decode())["text"] == "line\twith tab\n"
    junk = parse_record(b"\x00not a record", 1, 7)
    records = [text, text, junk]
    assert counts(records) == {"schema": 2, "(unreadable record)": 1}
    assert sorted(r.reason for r in sample(records, 1, seed=3)) == ["(unreadable record)", "schema"]
