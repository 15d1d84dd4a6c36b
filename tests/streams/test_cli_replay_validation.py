"""`tripwire replay` judges every line with the worker's decoder and refuses, skips or sends the events the
worker would dead-letter (issue #17). No broker: refusals happen before connecting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
from click.testing import CliRunner

from helpers.support import shared_data
from streams.cli.main import main
from streams.ops.replay import validate_file

GOOD = {"schema_version": "1", "ts": 1_700_000_000_000, "agent_id": "a", "kind": "refusal"}


def good(i: int) -> str:
    return json.dumps({**GOOD, "event_id": f"e{i}"})


def test_the_shipped_toolemu_file_reports_what_the_worker_dead_letters() -> None:
    path = shared_data("toolemu-trace-v1.jsonl")
    # independent count: schema v1 caps a tool name at 128 characters (docs/contract.md); nothing else is wrong
    expected = [n for n, line in enumerate(path.read_bytes().splitlines(), 1)
                if orjson.loads(line).get("kind") == "tool_call" and len(orjson.loads(line).get("tool") or "") > 128]
    assert len(expected) == 12
    for rebase in (False, True):
        v = validate_file(path, rebase=rebase)
        assert (v.lines, v.events, v.refused_events) == (6972, 6960, 12)
        assert v.by_reason == {"schema": 12}
        assert [p.line for p in v.problems] == expected


def test_unparseable_lines_refuse_the_file_and_nothing_is_sent(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    lines = [good(i) for i in range(5)] + [f"not json {i}" for i in range(20)]
    f.write_text("\n".join(lines) + "\n")
    # the broker does not exist: a refusal must come before any connection attempt
    r = CliRunner().invoke(main, ["replay", str(f), "--broker", "kafka://127.0.0.1:1"])
    assert r.exit_code == 1, r.output
    assert "cannot use the Kafka broker" not in r.output
    assert ("refused: the worker would dead-letter 20 of 25 events, on 20 of 25 lines (invalid_json 20); nothing "
            "sent. Fix the file, or pass --skip-invalid to send the other 5 (--send-invalid sends them all)") in r.output
    assert f"{f}:6: invalid_json: " in r.output and f"{f}:25: invalid_json: " in r.output


def test_refusal_report_as_json(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(good(1) + "\n" + json.dumps([{**GOOD, "event_id": "b1"}, {**GOOD, "event_id": "b2", "kind": "x"}])
                 + "\n\x1b[2Jevil\n")
    out = tmp_path / "report.json"
    r = CliRunner().invoke(main, ["replay", str(f), "--broker", "kafka://127.0.0.1:1", f"--json={out}"])
    assert r.exit_code == 1
    doc = json.loads(out.read_text())
    assert doc["sent"] is False
    v = doc["validation"]
    assert (v["events"], v["refused_events"], v["refused_by_reason"]) == (2, 2, {"invalid_json": 1, "unknown_kind": 1})
    assert [(p["line"], p["index"]) for p in v["problems"]] == [(2, 1), (3, None)]
    assert "\x1b" not in r.output  # the terminal never receives the attacker's escape sequence


def test_timestamps_the_worker_would_refuse_as_ts_future(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    now = float(int(time.time()))
    far = {**GOOD, "event_id": "f", "ts": int((now + 301) * 1000)}  # 301 s ahead: past max_future_skew_s 300
    near = {**GOOD, "event_id": "n", "ts": int((now + 300) * 1000)}
    f.write_text(json.dumps(near) + "\n" + json.dumps(far) + "\n")
    v = validate_file(f, max_future_skew_s=300, now=now)
    assert v.by_reason == {"ts_future": 1} and v.events == 1
    assert validate_file(f, rebase=True, now=now).ok  # rebased, the newest event lands now


def test_options_exclude_each_other(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(good(1) + "\n")
    r = CliRunner().invoke(main, ["replay", str(f), "--skip-invalid", "--send-invalid"])
    assert r.exit_code == 2 and "exclude each other" in r.output
