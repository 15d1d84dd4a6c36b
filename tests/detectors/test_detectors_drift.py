"""ADWIN wrapper, tool-mix drift and AgentDrift."""

import math
import random

import orjson
import pytest

from detectors import Adwin, AgentDrift, DriftConfig, DriftReport, StateError, ToolMix, detection_delay
from detectors.testing import Ev
from detectors.toolmix import chi2_critical, g_test, jensen_shannon

T0 = 86400.0 * 20834


def test_adwin_no_false_alarm_stationary_gaussian():
    rng = random.Random(0)
    ad = Adwin()
    hits = sum(1 for _ in range(50_000) if ad.update(rng.gauss(0.0, 1.0)))
    assert hits == 0
    assert ad.width == 50_000


def test_adwin_detects_bernoulli_shift_and_levels():
    rng = random.Random(1)
    ad = Adwin()
    first = None
    for i in range(12_000):
        p = 0.05 if i < 6000 else 0.10
        r = ad.update(1.0 if rng.random() < p else 0.0)
        if r and first is None:
            first = (i, r)
    assert first is not None
    i, (before, after) = first
    assert 6000 < i < 6000 + 3000
    assert before < after
    assert abs(before - 0.05) < 0.02


def test_adwin_mirrors_core_window():
    rng = random.Random(2)
    ad = Adwin()
    for i in range(20_000):
        ad.update(rng.random() + (3.0 if i > 10_000 else 0.0))
    assert ad.width == int(ad._core.get_width())
    assert ad.s == pytest.approx(ad._core.get_total(), rel=1e-9)


def test_adwin_state_roundtrip_continues_identically():
    rng = random.Random(3)
    a = Adwin(delta=0.01)
    for _ in range(5000):
        a.update(rng.random())
    st = orjson.loads(orjson.dumps(a.to_state()))
    b = Adwin.from_state(st)
    assert b.to_state() == a.to_state()
    seq = [rng.random() + (0.0 if k < 2000 else 0.5) for k in range(5000)]
    ra = [a.update(x) for x in seq]
    rb = [b.update(x) for x in seq]
    assert ra == rb and any(ra)
    assert a.to_state() == b.to_state()


def test_adwin_state_other_river_version():
    st = Adwin().to_state()
    with pytest.raises(StateError):
        Adwin.from_state({**st, "rv": "0.0.1"})


def test_jsd_and_gtest():
    assert jensen_shannon({"a": 1}, {"a": 3}) == 0.0
    assert jensen_shannon({"a": 1}, {"b": 1}) == 1.0
    assert jensen_shannon({"a": 1, "b": 1}, {"a": 1}) == pytest.approx(0.3113, abs=1e-4)
    g, dof = g_test({"a": 50, "b": 50}, {"a": 50, "b": 50})
    assert g == pytest.approx(0.0) and dof == 1
    from scipy.stats import chi2

    for dof in (2, 5, 20, 60):
        assert chi2.isf(1e-4, dof) <= chi2_critical(dof, 1e-4) <= 1.05 * chi2.isf(1e-4, dof)  # conservative
    assert chi2_critical(1, 0.05) == pytest.approx(3.8415, rel=1e-4)


def test_toolmix_stationary_no_alarm_then_shift():
    rng = random.Random(4)
    tools = ["search", "book", "cancel", "refund", "lookup"]
    w0 = [40, 30, 15, 10, 5]
    tm = ToolMix(DriftConfig(tool_mix_window=500))
    reps = [tm.update(rng.choices(tools, w0)[0], float(i)) for i in range(50_000)]
    assert [r for r in reps if r] == []
    w1 = [10, 30, 15, 40, 5]  # refunds jump
    reps = [tm.update(rng.choices(tools, w1)[0], float(i)) for i in range(1000)]
    hits = [r for r in reps if r]
    assert hits and hits[0].signal == "tool_mix" and hits[0].detector == "jsd"
    assert hits[0].detail in ("refund", "search")
    assert hits[0].statistic >= 0.05


def test_toolmix_caps_tools_and_roundtrip():
    tm = ToolMix(DriftConfig(max_tools=3, tool_mix_window=1000))
    for i in range(700):
        tm.update(f"t{i % 10}", float(i))
    assert len(tm.cur) <= 4 and "~other" in tm.cur
    st = orjson.loads(orjson.dumps(tm.to_state()))
    assert ToolMix.from_state(st, DriftConfig(max_tools=3, tool_mix_window=1000)).to_state() == tm.to_state()


def _stream(rng, n, t0, p_flag=0.05, lat=200.0, p_ref=0.02):
    out = []
    for i in range(n):
        t = t0 + i
        u = rng.random()
        if u < p_flag:
            out.append(Ev("monitor_flag", t, tool="x", severity="medium"))
        elif u < p_flag + p_ref:
            out.append(Ev("refusal", t))
        else:
            out.append(Ev("tool_call", t, tool=rng.choice(["a", "b", "c"]), latency_ms=rng.lognormvariate(math.log(lat), 0.5), cost_usd=0.002))
            if rng.random() < 0.5:
                out.append(Ev("llm_call", t, latency_ms=rng.lognormvariate(6, 0.4), input_tokens=rng.randint(500, 1500), output_tokens=200, cost_usd=0.01))
    return out


def test_agent_drift_quiet_when_stationary():
    rng = random.Random(5)
    d = AgentDrift()
    reps = []
    for e in _stream(rng, 60_000, T0):
        reps += d.update(e)
    assert reps == []


def test_agent_drift_reports_shifts():
    rng = random.Random(6)
    d = AgentDrift()
    for e in _stream(rng, 20_000, T0):
        assert d.update(e) == []
    reps: list[DriftReport] = []
    for e in _stream(rng, 10_000, T0 + 20_000, p_flag=0.15, lat=600.0, p_ref=0.08):
        reps += d.update(e)
    sig = {r.signal for r in reps}
    assert {"near_miss_rate", "tool_latency_ms", "refusal_rate"} <= sig
    nm = next(r for r in reps if r.signal == "near_miss_rate")
    assert nm.detector == "adwin" and nm.before < nm.after and nm.ts >= T0 + 20_000
    lat = next(r for r in reps if r.signal == "tool_latency_ms")
    assert 150 < lat.before < 260 and lat.after > lat.before
    assert d.level("tool_latency_ms") == pytest.approx(600.0, rel=0.15)
    assert d.level("near_miss_rate") == pytest.approx(0.15 / 0.85, rel=0.25)
    assert d.level("tool_mix") is None and AgentDrift().level("tokens") is None


def test_agent_drift_state_roundtrip():
    rng = random.Random(7)
    d = AgentDrift()
    evs = _stream(rng, 6000, T0)
    for e in evs[:4000]:
        d.update(e)
    st = orjson.loads(orjson.dumps(d.to_state()))
    d2 = AgentDrift.from_state(st)
    assert d2.to_state() == d.to_state()
    for e in evs[4000:]:
        assert d.update(e) == d2.update(e)
    assert d.to_state() == d2.to_state()


def test_agent_drift_state_from_other_river_restarts_signal():
    d = AgentDrift()
    for i in range(100):
        d.update(Ev("tool_call", T0 + i, tool="a", latency_ms=10.0))
    st = d.to_state()
    st["sig"]["tool_latency_ms"]["ad"]["rv"] = "0.0.1"
    d2 = AgentDrift.from_state(st)
    assert d2._sig["tool_latency_ms"].width == 0
    assert d2._sig["near_miss_rate"].width == 100


def test_detection_delay_sensitivity():
    res = detection_delay(p0=0.05, p1=0.10, n_before=5000, n_after=5000, trials=4, seed=3)
    assert res.false_alarms == 0 and res.missed == 0
    assert res.median_delay is not None and res.median_delay < 2000
    assert set(res.to_dict()) >= {"false_alarms_per_10k", "mean_delay", "p90_delay"}
