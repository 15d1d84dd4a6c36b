"""Hypothesis properties of RollingCounts against a brute-force reference model."""

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import CountsConfig, KEYS, RollingCounts, event_vector
from detectors.keys import FLOAT_KEYS, INT_KEYS
from detectors.testing import Ev

T0 = 86400.0 * 20834
CFG = CountsConfig(lateness_s=300)
WINDOWS = tuple(CFG.windows) + (CFG.period_s,)
KINDS = ["tool_call", "llm_call", "monitor_flag", "incident", "refusal", "escalation", "task_outcome"]

ev_st = st.builds(
    lambda kind, sev, err, cost: (kind, sev, err, cost),
    st.sampled_from(KINDS),
    st.sampled_from([None, "low", "medium", "high", "critical"]),
    st.booleans(),
    st.sampled_from([None, 0.0, 0.25, 0.5, 2.0]),
)
# time increments relative to the previous event: mostly forward, sometimes back (late or not)
step_st = st.one_of(
    st.integers(0, 120),
    st.integers(-900, 0),
    st.integers(0, 4 * 3600),
    st.sampled_from([86400, 3 * 86400, 31 * 86400]),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_events(specs, steps, monotone_within_lateness=False):
    evs = []
    t = T0
    wm = -math.inf
    for (kind, sev, err, cost), dt in zip(specs, steps):
        if monotone_within_lateness:
            t = (wm if wm > -math.inf else T0) + max(dt, -300)
        else:
            t = t + dt
        t += 0.5
        wm = max(wm, t)
        evs.append(Ev(kind, t, severity=sev, status="error" if err else "ok", cost_usd=cost))
    return evs


def reference(evs, now, lateness=CFG.lateness_s):
    """Accepted events and per-window totals computed naively."""
    wm = -math.inf
    acc, late = [], 0
    for e in evs:
        if e.ts >= wm:
            wm = e.ts
        elif wm - e.ts > lateness:
            late += 1
            continue
        acc.append(e)
    now = max(now, wm)
    out = {}
    for w in WINDOWS:
        j, n = CFG.window_level(w)
        g = CFG.levels[j][0]
        hi = int(now // g)
        tot = [0.0] * 11
        for e in acc:
            if hi - n < int(e.ts // g) <= hi:
                iv, fv = event_vector(e, CFG)
                for k, x in enumerate(iv + fv):
                    tot[k] += x
        d = dict(zip(INT_KEYS + FLOAT_KEYS, tot))
        out[w] = {k: d[k] for k in KEYS}
    return out, late


@SETTINGS
@given(st.lists(st.tuples(ev_st, step_st), min_size=1, max_size=120), st.integers(0, 5 * 86400))
def test_matches_reference_model(items, extra):
    evs = make_events([a for a, _ in items], [b for _, b in items])
    rc = RollingCounts(CFG)
    for e in evs:
        rc.add_event(e)
    now = max(e.ts for e in evs) + extra
    ref, late = reference(evs, now)
    assert rc.late == late
    for w in WINDOWS:
        got = rc.window_counts(w, now)
        assert all(v >= 0 for v in got.values())
        assert got == ref[w], w


@SETTINGS
@given(st.lists(st.tuples(ev_st, step_st), min_size=1, max_size=80), st.integers(0, 86400))
def test_bucket_sums_and_state_identity(items, extra):
    evs = make_events([a for a, _ in items], [b for _, b in items])
    rc = RollingCounts(CFG)
    for e in evs:
        rc.add_event(e)
    now = max(e.ts for e in evs) + extra
    for w in WINDOWS:
        j, n = CFG.window_level(w)
        g = CFG.levels[j][0]
        lo = (int(now // g) - n + 1) * g
        tot = dict.fromkeys(KEYS, 0.0)
        for start, c in rc.buckets(j):
            if start >= lo:
                for k in KEYS:
                    tot[k] += c[k]
        assert tot == rc.window_counts(w, now)
    s1 = rc.to_state()
    s2 = RollingCounts.from_state(orjson.loads(orjson.dumps(s1)), CFG).to_state()
    assert s1 == s2


@SETTINGS
@given(st.lists(ev_st, min_size=0, max_size=40), st.lists(step_st, min_size=40, max_size=40),
       st.integers(0, 4 * 86400), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
def test_window_expiry_is_the_next_change_of_a_quiet_window(specs, steps, after, probes):
    """Between a read at ``now`` and ``window_expiry`` no read differs; at the expiry one does.

    This is what lets the engine skip re-evaluating a quiet scope until then (decisions unchanged).
    """
    rc = RollingCounts(CFG)
    for ev in make_events(specs, steps):
        rc.add_event(ev)
    now = (rc.watermark or T0) + after
    for w in WINDOWS[:-1]:
        at_now = rc.window_vector(w, now)
        expiry = rc.window_expiry(w, now)
        assert expiry > now
        if math.isinf(expiry):
            assert rc.window_vector(w, now + 40 * 86400) == at_now  # never changes again
            continue
        for p in probes:  # any time strictly before the expiry reads the same
            t = now + p * (expiry - now)
            if t < expiry:
                assert rc.window_vector(w, t) == at_now, (w, now, t, expiry)
        assert rc.window_vector(w, expiry) != at_now  # the oldest non-empty bucket has left


#: several scopes: (event specs, time steps, seconds after the last event to read at)
scopes_st = st.lists(st.tuples(st.lists(ev_st, min_size=0, max_size=25), st.lists(step_st, min_size=25, max_size=25),
                               st.integers(0, 2 * 86400)), min_size=1, max_size=5)


def filled(scopes):
    """(RollingCounts, read time) per scope of ``scopes_st``."""
    rcs, nows = [], []
    for specs, steps, after in scopes:
        rc = RollingCounts(CFG)
        for ev in make_events(specs, steps):
            rc.add_event(ev)
        rcs.append(rc)
        nows.append((rc.watermark or T0) + after)
    return rcs, nows


@SETTINGS
@given(scopes_st)
def test_a_batch_read_equals_the_per_scope_reads(scopes):
    """RingBatch.window_sums (numpy, many scopes at once) = RollingCounts.window_vector of each, every window."""
    from detectors.batch import RingBatch

    rcs, nows = filled(scopes)
    batch = RingBatch(rcs)
    keys = list(INT_KEYS) + list(FLOAT_KEYS)
    for w in WINDOWS:
        got = batch.window_sums(w, nows, keys)
        for row, (rc, now) in enumerate(zip(rcs, nows)):
            want = rc.window_vector(w, now)
            assert [round(x, 3) for x in got[row].tolist()] == [round(x, 3) for x in want], (w, row)


@SETTINGS
@given(scopes_st)
def test_a_batch_expiry_equals_the_per_scope_expiry(scopes):
    """RingBatch.window_expiry = RollingCounts.window_expiry of each scope, every window."""
    from detectors.batch import RingBatch

    rcs, nows = filled(scopes)
    batch = RingBatch(rcs)
    for w in WINDOWS[:-1]:
        assert batch.window_expiry(w, nows).tolist() == [rc.window_expiry(w, now) for rc, now in zip(rcs, nows)], w
