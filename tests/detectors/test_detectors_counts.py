"""RollingCounts: exact expectations on hand-computed sequences."""

import math

import orjson
import pytest

from detectors import CountsConfig, KEYS, RollingCounts, StateError, event_vector
from detectors.testing import Ev

T0 = 86400.0 * 20834  # 2027-01-15T00:00Z, aligned to the day
assert T0 % 86400 == 0


def test_keys_exact():
    assert set(RollingCounts().window_counts(300, T0)) == set(KEYS)
    assert len(KEYS) == 11


def test_empty_reads_zero():
    rc = RollingCounts()
    for w in (300, 1800, 3600, 21600, 86400, 259200, 2592000):
        assert rc.window_counts(w, T0) == dict.fromkeys(KEYS, 0.0)
    assert rc.watermark is None and rc.empty


def test_classification_all_kinds():
    rc = RollingCounts()
    evs = [
        Ev("tool_call", T0, status="ok", cost_usd=0.5),
        Ev("tool_call", T0 + 1, status="error"),
        Ev("llm_call", T0 + 2, cost_usd=0.25, status="error"),
        Ev("monitor_flag", T0 + 3, severity="low"),
        Ev("monitor_flag", T0 + 4, severity="medium"),
        Ev("monitor_flag", T0 + 5, severity="high"),
        Ev("monitor_flag", T0 + 6, severity="critical"),
        Ev("monitor_flag", T0 + 7),  # no severity: default weight 1
        Ev("incident", T0 + 8, severity="high"),
        Ev("incident", T0 + 9, severity="critical"),
        Ev("refusal", T0 + 10),
        Ev("escalation", T0 + 11, human_minutes=3),
        Ev("task_outcome", T0 + 12, outcome="success", cost_usd=99.0),  # task total: not counted
    ]
    for e in evs:
        assert rc.add_event(e)
    w = rc.window_counts(300, T0 + 30)
    assert w == {
        "tool_calls": 2.0,
        "near_misses": 5.0,
        "near_misses_weighted": 19.0,
        "incidents": 2.0,
        "incidents_critical": 1.0,
        "errors": 1.0,
        "refusals": 1.0,
        "escalations": 1.0,
        "llm_calls": 1.0,
        "cost_usd": 0.75,
        "events": 13.0,
    }
    # slow path (event_vector) classifies identically
    rc2 = RollingCounts()
    for e in evs:
        rc2.add_vector(e.ts, *event_vector(e))
    assert rc2.window_counts(300, T0 + 30) == w


def test_custom_weights():
    rc = RollingCounts(CountsConfig(severity_weights={"high": 7, "low": 0.5}, default_weight=3))
    for sev in ("high", "low", "medium", None):
        rc.add_event(Ev("monitor_flag", T0, severity=sev))
    assert rc.window_counts(300, T0)["near_misses_weighted"] == 7 + 0.5 + 3 + 3


def test_window_edges_bucket_aligned():
    rc = RollingCounts()
    # one tool call per minute for 2 hours: minute m at T0 + 60 m + 10
    for m in range(120):
        rc.add_event(Ev("tool_call", T0 + 60 * m + 10))
    now = T0 + 60 * 119 + 30  # inside minute 119
    # 5m window = minute buckets 115..119
    assert rc.window_counts(300, now)["tool_calls"] == 5
    # 30m = 5-minute buckets: now is in 5m-bucket 23 (minutes 115..119); buckets 18..23 -> minutes 90..119
    assert rc.window_counts(1800, now)["tool_calls"] == 30
    assert rc.window_counts(3600, now)["tool_calls"] == 60
    # 6h/1d/3d/30d cover everything
    for w in (21600, 86400, 259200, 2592000):
        assert rc.window_counts(w, now)["tool_calls"] == 120
    # reading later: the 5m window slides by whole minutes
    assert rc.window_counts(300, now + 60)["tool_calls"] == 4
    assert rc.window_counts(300, now + 299)["tool_calls"] == 0
    assert rc.window_counts(3600, now + 1800)["tool_calls"] == 30


def test_idle_decay_all_levels():
    rc = RollingCounts()
    rc.add_event(Ev("tool_call", T0 + 5))
    assert rc.window_counts(300, T0 + 299)["tool_calls"] == 1
    assert rc.window_counts(300, T0 + 300)["tool_calls"] == 0
    assert rc.window_counts(3600, T0 + 3599)["tool_calls"] == 1
    assert rc.window_counts(3600, T0 + 3600)["tool_calls"] == 0
    assert rc.window_counts(259200, T0 + 259199)["tool_calls"] == 1
    assert rc.window_counts(259200, T0 + 259200)["tool_calls"] == 0
    assert rc.window_counts(2592000, T0 + 29 * 86400)["tool_calls"] == 1
    assert rc.window_counts(2592000, T0 + 30 * 86400)["tool_calls"] == 0


def test_now_before_watermark_is_clamped():
    rc = RollingCounts()
    rc.add_event(Ev("tool_call", T0 + 100))
    assert rc.window_counts(300, T0)["tool_calls"] == 1


def test_lateness():
    rc = RollingCounts(CountsConfig(lateness_s=300))
    assert rc.add_event(Ev("tool_call", T0 + 1000))
    assert rc.add_event(Ev("tool_call", T0 + 700))  # exactly at the lateness bound: accepted
    assert not rc.add_event(Ev("tool_call", T0 + 699.5))  # beyond: late
    assert rc.late == 1
    assert rc.window_counts(3600, T0 + 1000)["tool_calls"] == 2
    # the accepted one landed in its own minute (11), outside the 5m window (minutes 12..16)
    assert rc.window_counts(300, T0 + 1000)["tool_calls"] == 1


def test_lateness_lands_in_own_bucket():
    rc = RollingCounts(CountsConfig(lateness_s=300))
    rc.add_event(Ev("tool_call", T0 + 1000))  # minute 16
    rc.add_event(Ev("monitor_flag", T0 + 750, severity="high"))  # minute 12, in the fine ring
    rc.add_event(Ev("incident", T0 + 701))  # minute 11, out of the fine ring: coarse only
    w5 = rc.window_counts(300, T0 + 1000)
    assert (w5["tool_calls"], w5["near_misses"], w5["incidents"]) == (1, 1, 0)
    w1h = rc.window_counts(3600, T0 + 1000)
    assert (w1h["tool_calls"], w1h["near_misses"], w1h["incidents"], w1h["events"]) == (1, 1, 1, 3)
    assert rc.late == 0
    assert rc.window_counts(300, T0 + 1020 + 180)["near_misses"] == 0


def test_zero_lateness():
    rc = RollingCounts(CountsConfig(lateness_s=0))
    rc.add_event(Ev("tool_call", T0 + 10))
    assert rc.add_event(Ev("tool_call", T0 + 10))
    assert not rc.add_event(Ev("tool_call", T0 + 9.9))
    assert rc.late == 1


def test_big_jump_clears_rings():
    rc = RollingCounts()
    for k in range(100):
        rc.add_event(Ev("tool_call", T0 + k * 30))
    rc.add_event(Ev("llm_call", T0 + 40 * 86400))
    for w in (300, 3600, 86400, 2592000):
        c = rc.window_counts(w, T0 + 40 * 86400)
        assert c["tool_calls"] == 0 and c["llm_calls"] == 1


def test_buckets_sum_to_window():
    rc = RollingCounts()
    for k in range(500):
        rc.add_event(Ev("tool_call" if k % 3 else "monitor_flag", T0 + k * 97, severity="medium", cost_usd=0.25))
    now = T0 + 500 * 97
    cfg = rc.config
    for w in (300, 1800, 3600, 21600, 86400, 259200, 2592000):
        j, n = cfg.window_level(w)
        g = cfg.levels[j][0]
        lo = (int(now // g) - n + 1) * g
        tot = dict.fromkeys(KEYS, 0.0)
        for start, c in rc.buckets(j):
            if start >= lo:
                for k in KEYS:
                    tot[k] += c[k]
        assert tot == rc.window_counts(w, now)


def test_state_roundtrip_and_json():
    rc = RollingCounts()
    for k in range(300):
        rc.add_event(Ev("tool_call", T0 + k * 13.7, cost_usd=0.1 * (k % 7), status="error" if k % 11 == 0 else "ok"))
    rc.add_event(Ev("tool_call", T0 - 10_000))
    st = rc.to_state()
    blob = orjson.dumps(st)
    st2 = orjson.loads(blob)
    rc2 = RollingCounts.from_state(st2)
    assert rc2.to_state() == st
    assert rc2.all_windows(T0 + 5000) == rc.all_windows(T0 + 5000)
    # continues identically
    e = Ev("monitor_flag", T0 + 300 * 13.7 + 100, severity="critical")
    rc.add_event(e)
    rc2.add_event(e)
    assert rc.to_state() == rc2.to_state()


def test_state_layout_mismatch():
    st = RollingCounts().to_state()
    with pytest.raises(StateError):
        RollingCounts.from_state(st, CountsConfig(levels=((60, 10), (3600, 72), (86400, 30)), windows=(600, 3600)))
    with pytest.raises(StateError):
        RollingCounts.from_state({**st, "v": 99})


def test_config_validation():
    with pytest.raises(ValueError):
        CountsConfig(windows=(7200 + 60,))  # not servable
    with pytest.raises(ValueError):
        CountsConfig(levels=((60, 5), (90, 10)))
    with pytest.raises(ValueError):
        CountsConfig(float_typecode="x")
    assert CountsConfig().window_level(21600) == (2, 12)
    assert CountsConfig().window_level(259200) == (3, 24)
    assert CountsConfig().window_level(2592000) == (4, 30)


def test_float64_option():
    rc = RollingCounts(CountsConfig(float_typecode="d"))
    rc.add_event(Ev("llm_call", T0, cost_usd=0.1))
    rc.add_event(Ev("llm_call", T0 + 1, cost_usd=0.2))
    assert rc.window_counts(300, T0 + 1)["cost_usd"] == pytest.approx(0.3, abs=1e-15)
    assert RollingCounts.from_state(rc.to_state(), rc.config).to_state() == rc.to_state()


def test_float32_precision_documented():
    rc = RollingCounts()
    for k in range(1000):
        rc.add_event(Ev("llm_call", T0 + k, cost_usd=0.001))
    assert rc.window_counts(86400, T0 + 1000)["cost_usd"] == pytest.approx(1.0, rel=1e-5)


def test_state_with_former_delta_tracker_entry_loads():
    rc = RollingCounts()
    rc.add_event(Ev("tool_call", T0))
    old = {**rc.to_state(), "dt": None}  # checkpoints written before the delta tracker was removed
    assert RollingCounts.from_state(old).to_state() == rc.to_state()


def test_nan_free_windows():
    rc = RollingCounts()
    rc.add_event(Ev("tool_call", T0))
    assert all(not math.isnan(v) for v in rc.window_counts(300, T0).values())
