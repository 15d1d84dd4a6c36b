"""#19: the backtest reads with the GC off, freezes the events and raises the young-generation threshold for the
replay: every GC setting is back as it was afterwards, also when the replay raises."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import streams.ops.backtest as bt
from breakers.policy import load_policy
from streams.settings import DEFAULT_POLICY


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(
        f'{{"schema_version":"1","event_id":"e{i}","ts":{1_790_000_000_000 + i * 1000},"agent_id":"a",'
        f'"kind":"tool_call","tool":"search","status":"ok"}}' for i in range(50)) + "\n")
    return path


def test_gc_settings_are_restored(tmp_path: Path) -> None:
    before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())
    report = bt.backtest(load_policy(DEFAULT_POLICY), _file(tmp_path))
    assert report.events == 50
    assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before


def test_gc_settings_are_restored_when_the_replay_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bt, "_tally_agents", boom)
    with pytest.raises(RuntimeError):
        bt.backtest(load_policy(DEFAULT_POLICY), _file(tmp_path))
    assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before
