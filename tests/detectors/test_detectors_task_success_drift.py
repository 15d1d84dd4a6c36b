"""Performance drift (task success) and model tracking: meaning tests against independent computations."""

from __future__ import annotations

import math

import orjson
import pytest
from scipy.stats import chi2_contingency

from detectors import AgentDrift
from detectors.models import MAX_MODEL_LEN, ModelSwitch, ModelTracker
from detectors.success import SuccessDrift, two_proportion_z
from detectors.testing import Ev
from helpers.support import shared_data

T0 = 1.8e9
REF, RECENT, Z = 100, 50, 4.0

#: the fixed input of the meaning tests: 200 outcomes at 90 % (every 10th fails), then 200 alternating (50 %)
DROP = [0 if i % 10 == 9 else 1 for i in range(200)] + [(i + 1) % 2 for i in range(200)]


def expected_reports(bits: list[int]) -> list[tuple[int, float, float, float]]:
    """The specification, computed from slices (no running counts): (index, before, after, |z|) per report.

    A test runs at outcome i when the recent window (the last 50) and the reference (the 100 before it) are
    full and the reference holds no outcome from before the last report's recent window; |z| comes from
    scipy's Pearson chi-square of the 2x2 table (z² = chi², no continuity correction).
    """
    out = []
    last = -10**9
    for i in range(len(bits)):
        if i + 1 < REF + RECENT or i < last + REF:
            continue
        ref, rec = bits[i + 1 - REF - RECENT:i + 1 - RECENT], bits[i + 1 - RECENT:i + 1]
        kb, kr = sum(ref), sum(rec)
        if kb + kr in (0, REF + RECENT):
            continue
        chi2 = chi2_contingency([[kb, REF - kb], [kr, RECENT - kr]], correction=False)[0]
        if math.sqrt(chi2) >= Z:
            out.append((i, kb / REF, kr / RECENT, math.sqrt(chi2)))
            last = i
    return out


def test_drop_from_90_to_50_percent_gives_exactly_the_specified_report() -> None:
    d = AgentDrift()
    got = []
    for i, b in enumerate(DROP):
        for r in d.update(Ev("task_outcome", T0 + i, outcome="success" if b else "failure", task_id=f"t{i}")):
            got.append((int(r.ts - T0), r.signal, r.detector, r.before, r.after, r.statistic, r.detail))
    want = expected_reports(DROP)
    assert want == [(233, 0.9, 0.62, pytest.approx(4.0935, abs=1e-4))]  # the figures quoted in docs/metrics.md
    assert [(g[0], g[3], g[4]) for g in got] == [(w[0], w[1], w[2]) for w in want]
    assert got[0][1:3] == ("task_success", "two_proportion_z") and got[0][6] == "90/100 -> 31/50"
    assert got[0][5] == pytest.approx(want[0][3], rel=1e-9)
    assert d.level("task_success") == pytest.approx(sum(DROP[-50:]) / 50)


@pytest.mark.parametrize("seed", range(3))
def test_random_streams_match_the_specification(seed: int) -> None:
    import random

    rng = random.Random(seed)
    bits = [int(rng.random() < (0.85 if i < 400 else 0.55 if i < 800 else 0.8)) for i in range(1200)]
    d = SuccessDrift()
    got = [(i, r.before, r.after) for i, b in enumerate(bits) if (r := d.update(b, float(i))) is not None]
    assert got == [(i, b, a) for i, b, a, _ in expected_reports(bits)]
    assert got  # two shifts of 30 points: at least one found


def test_two_proportion_z_squared_is_the_pearson_chi_square() -> None:
    for kb, kr in ((90, 31), (42, 20), (99, 50), (10, 49)):
        chi2 = chi2_contingency([[kb, 100 - kb], [kr, 50 - kr]], correction=False)[0]
        assert two_proportion_z(kb, 100, kr, 50) ** 2 == pytest.approx(chi2, rel=1e-9)
    assert two_proportion_z(100, 100, 50, 50) == 0.0  # no variance: no evidence


def test_false_alarms_on_the_shipped_tau_bench_outcomes() -> None:
    """200 real outcomes (gpt-4o airline, 50 tasks x 4 trials, 42 % success): no task_success report."""
    path = shared_data("taubench-airline-trace-v1.jsonl")
    d = AgentDrift()
    reports = []
    n = 0
    for line in path.read_bytes().splitlines():
        e = orjson.loads(line)
        ev = Ev(e["kind"], e["ts"] / 1000, tool=e.get("tool"), status=e.get("status"), outcome=e.get("outcome"))
        n += ev.kind == "task_outcome"
        reports += [r for r in d.update(ev) if r.signal == "task_success"]
    assert n == 200 and reports == []


def test_state_round_trip_and_old_checkpoints() -> None:
    d = AgentDrift()
    for i, b in enumerate(DROP[:180]):
        d.update(Ev("task_outcome", T0 + i, outcome="success" if b else "failure"))
    st = orjson.loads(orjson.dumps(d.to_state()))
    e = AgentDrift.from_state(st)
    assert e.to_state() == d.to_state()
    rest = [Ev("task_outcome", T0 + 180 + i, outcome="success" if b else "failure") for i, b in enumerate(DROP[180:])]
    assert [r.to_dict() for x in rest for r in d.update(x)] == [r.to_dict() for x in rest for r in e.update(x)]
    old = {k: v for k, v in st.items() if k != "success"}  # a checkpoint written before #16
    assert AgentDrift.from_state(old).level("task_success") is None
    assert AgentDrift.from_state({**st, "success": {"v": 99}}).level("task_success") is None  # unknown: relearn


def test_model_tracker_confirms_runs_and_ignores_routing() -> None:
    t = ModelTracker()
    seq = ["a"] * 5 + ["b", None, "b", "a"] + ["b", "a"] * 10  # a router alternating a/b: never 3 b in a row
    assert [s for i, m in enumerate(seq) if (s := t.update(m, float(i))) is not None] == []
    assert t.current == "a"
    got = [s for i, m in enumerate(["b", None, "b", "b", "b"]) if (s := t.update(m, 100.0 + i)) is not None]
    assert got == [ModelSwitch("a", "b", 100.0, {})]
    assert t.update("x" * 1000, 1.0) is None and t.candidate == "x" * MAX_MODEL_LEN


def test_model_tracker_bounds_parked_models() -> None:
    t = ModelTracker()
    for i in range(10):
        t.park(f"m{i}", {"task_success": i / 10}, float(i), max_models=4)
    assert list(t.parked) == ["m6", "m7", "m8", "m9"]
    t.park("m6", {"task_success": 0.0}, 11.0, max_models=4)  # re-parked: most recent
    assert list(t.parked) == ["m7", "m8", "m9", "m6"] and t.levels_of("m6") == {"task_success": 0.0}
    assert ModelTracker.from_state(orjson.loads(orjson.dumps(t.to_state()))).to_state() == t.to_state()
