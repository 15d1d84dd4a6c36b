"""Issue #19: the fast backtest decides exactly what the live path decides at the same evaluation step.

Reference (an independent computation): the plain replay loop, one ``Monitor.ingest`` per event,
the Monitor's clock set to each event's time, ``Monitor.evaluate`` every ``step_s`` of event time,
no CPU budget per tick, every breaker not closed evaluated on every tick (``evaluate_unchanged``: the
rule before the rechecks of :mod:`streams.engine.rechecks`), and the /metrics figures computed. The backtest (batched same-timestamp ingest, fast decode, tallies
outside the loop) must give the same report, transition for transition, on a generated file with
trips and recoveries and on the shipped ToolEmu file; and it must not depend on how fast the
machine runs (old code: a slow tick deferred scopes to later steps and changed the decisions).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.support import shared_data

from breakers.policy import load_policy
from breakers.state_machine import ENFORCING
from streams.contract.decode import decode_message
from streams.engine.clock import EventClock
from streams.engine.monitor import Monitor
from streams.engine.tuning import EngineTuning
from streams.ops.backtest import MAX_LINE_BYTES, BacktestReport, _note, backtest
from streams.settings import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # the bench's fixed-seed generator (bench/ is not a package)
    spec = importlib.util.spec_from_file_location("bench_backtest", ROOT / "bench" / "bench_backtest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod.generate


def reference_transitions(policy, path: Path, step_s: float = 10.0, idle_step_s: float = 60.0,
                          horizon_s: float = 6 * 3600.0, counter: list[int] | None = None) -> list[dict]:
    """The live path, one event at a time, every step evaluated in full."""
    events = []
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            events.extend(decode_message(None, raw.strip(), max_bytes=MAX_LINE_BYTES)[0])
    events.sort(key=lambda e: e.ts)
    now = [events[0].ts]
    monitor = Monitor(policy, clock=EventClock(wall=lambda: now[0]), simulate_gateway=True,
                      tuning=EngineTuning(eval_budget_s=math.inf, evaluate_unchanged=True))
    if counter is not None:
        count_evaluations(monitor, counter)

    sink = BacktestReport("", path.name, step_s)  # _note fills its transitions and scopes

    def tick(t: float) -> None:
        now[0] = t
        step = [tr for change in monitor.evaluate(wall=t) for tr in change.transitions]
        for tr in sorted(step, key=lambda tr: tr.scope):  # a step's transitions by scope (the report's order)
            _note(sink, tr.to_dict())  # type: ignore[arg-type]

    nxt = math.floor(events[0].ts / step_s) * step_s + step_s
    for ev in events:
        while nxt <= ev.ts:
            tick(nxt)
            nxt += step_s
        now[0] = max(now[0], ev.ts)
        monitor.ingest(0, [ev], attested=True)
    tick(nxt)
    t, end = nxt, events[-1].ts + horizon_s
    while t < end and any(st.state in ENFORCING for st in monitor.states.values()):
        t += idle_step_s
        tick(t)
    return sink.transitions


def count_evaluations(monitor: Monitor, counter: list[int]) -> None:
    """Count the scope evaluations of ``monitor`` into ``counter[0]``."""
    inner = monitor._evaluate_scope

    def counted(*args, **kwargs):
        counter[0] += 1
        return inner(*args, **kwargs)

    monitor._evaluate_scope = counted  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bt") / "traces.jsonl"
    _generator()(path, n=3000, agents=16, span_s=2 * 3600.0, seed=7)
    return path


def test_generated_file_same_transitions_as_the_per_event_replay(generated: Path) -> None:
    policy = load_policy(DEFAULT_POLICY)
    ref = reference_transitions(policy, generated)
    report = backtest(policy, generated)
    assert len(ref) >= 10, "the fixed input must trip breakers for this test to mean anything"
    assert report.events == 3000
    assert report.transitions == ref


def test_rechecks_evaluate_less_for_the_same_transitions(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Breakers not closed are evaluated when a window or timer can change, not every tick: same decisions.

    In the generated file most agents burn their weighted near-miss budget slowly (``shadow``): the old
    rule evaluated every one of those scopes on every 10 s step.
    """
    import streams.ops.backtest as bt

    policy = load_policy(DEFAULT_POLICY)
    ref_count = [0]
    ref = reference_transitions(policy, generated, counter=ref_count)
    new_count = [0]
    made = bt.Monitor

    def counting_monitor(*args, **kwargs):
        m = made(*args, **kwargs)
        count_evaluations(m, new_count)
        return m

    monkeypatch.setattr(bt, "Monitor", counting_monitor)
    report = backtest(policy, generated)
    assert report.transitions == ref
    assert sum(1 for t in ref if t["to"] == "shadow") >= 5
    assert new_count[0] < 0.6 * ref_count[0], (new_count[0], ref_count[0])  # measured: 5,767 vs 11,228


def test_the_batch_screen_decides_like_the_exact_evaluation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy file (120 agents, dozens of scopes per step): most evaluations are settled by the numpy screen
    (:mod:`breakers.screen`), and the transitions are those of the reference (exact evaluation of every scope)."""
    import streams.ops.backtest as bt

    path = tmp_path / "busy.jsonl"
    _generator()(path, n=12_000, agents=120, span_s=1.5 * 3600.0, seed=11)
    policy = load_policy(DEFAULT_POLICY)
    ref = reference_transitions(policy, path)
    made: list[Monitor] = []
    real = bt.Monitor

    def keep(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(bt, "Monitor", keep)
    report = backtest(policy, path)
    assert len(ref) >= 20 and report.transitions == ref
    assert made[0].screened > 5_000, made[0].screened  # the screen really decided (measured: see the README)


def test_decisions_do_not_depend_on_machine_speed(generated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine so slow that every scope evaluation takes a second: same report as a fast one."""
    from streams.engine import pacing

    policy = load_policy(DEFAULT_POLICY)
    fast = backtest(policy, generated).to_dict()

    class SlowClock:
        t = 0.0

        def perf_counter(self) -> float:
            self.t += 1.0
            return self.t

    monkeypatch.setattr(pacing, "time", SlowClock())
    assert backtest(policy, generated).to_dict() == fast


def test_same_report_whatever_the_string_hash_seed(tmp_path: Path) -> None:
    """Runs of ``tripwire backtest --json`` in processes with different hash seeds: the same JSON.

    Old code: a step's transitions came out in the engine's set order, which follows the hash seed
    (the first 2,500 lines of the ToolEmu file have several agents tripping at the same step).
    """
    generated = tmp_path / "toolemu-head.jsonl"
    generated.write_bytes(b"".join(shared_data("toolemu-trace-v1.jsonl").read_bytes().splitlines(True)[:2500]))
    docs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"r{seed}.json"
        subprocess.run([sys.executable, "-m", "streams.cli", "backtest", "--traces", str(generated), "--json",
                        str(out)], check=True, cwd=ROOT, capture_output=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        docs.append(json.loads(out.read_text()))
    assert len({t["ts"] for t in docs[0]["transitions"]}) < len(docs[0]["transitions"])  # shared steps
    assert docs[0] == docs[1] == docs[2]


def test_shipped_toolemu_file_same_transitions_as_the_per_event_replay() -> None:
    path = shared_data("toolemu-trace-v1.jsonl")
    policy = load_policy(DEFAULT_POLICY)
    report = backtest(policy, path)
    assert report.transitions == reference_transitions(policy, path)
    assert report.transitions, "the ToolEmu file trips breakers under the shipped policy"


def test_rejected_lines_keep_their_reasons(tmp_path: Path) -> None:
    """The fast decode path hands every line it does not accept to decode_message: same reasons, same counts."""
    good = b'{"schema_version":"1","event_id":"e1","ts":1790000000000,"agent_id":"a","kind":"tool_call","tool":"t"}'
    lines = [good, b'{"schema_version":"1"}', b"{not json", b"[]", b"42",
             b'{"schema_version":"9","event_id":"x","ts":0,"agent_id":"a","kind":"refusal"}', b"[" + good.replace(b"e1", b"e2") + b", 7]"]
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected: dict[str, int] = {}
    accepted = 0
    for line in lines:
        ok, bad = decode_message(None, line, max_bytes=MAX_LINE_BYTES)
        accepted += len(ok)
        for r in bad:
            expected[r.reason] = expected.get(r.reason, 0) + 1
    report = backtest(load_policy(DEFAULT_POLICY), path)
    assert (report.lines, report.events, report.rejected) == (len(lines), accepted, expected)
