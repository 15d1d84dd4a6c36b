"""#19: the optimised RollingCounts write path (inline counting in a new head bucket, a roll-up that walks only
the head's non-zero counters) keeps the very rings of the former implementation, bit for bit.

The reference is the pre-#19 code, kept verbatim in ``tests/helpers/counts_reference.py``. Every ring, the
head, the watermark, the late count and each ``add_event`` result are compared after every write, on
sequences with same-bucket, next-bucket, late, within-lateness and far jumps, float32 and float64 rings and
a layout of its own.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import CountsConfig, RollingCounts
from detectors.testing import Ev
from helpers.counts_reference import ReferenceRollingCounts

T0 = 86400.0 * 20834 + 17.25
KINDS = ["tool_call", "llm_call", "monitor_flag", "incident", "refusal", "escalation", "task_outcome"]
CONFIGS = [CountsConfig(lateness_s=300), CountsConfig(lateness_s=0), CountsConfig(lateness_s=900, float_typecode="d"),
           CountsConfig(levels=((10, 6), (60, 10), (600, 12), (3600, 48), (86400, 31)), windows=(60, 600, 3600),
                        lateness_s=120)]

event = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from([None, "low", "medium", "high", "critical", "bogus"]),
    st.booleans(),
    st.one_of(st.none(), st.sampled_from([0.0, 0.001, 0.25, 2.0, 1e-9, 123456.789]),
              st.floats(0, 1e6, allow_nan=False, allow_infinity=False)),
    # seconds from the previous event: same bucket, next buckets, back (late or not), far jumps
    st.one_of(st.floats(0, 59.9), st.integers(0, 400), st.integers(-1000, 0), st.integers(0, 8 * 3600),
              st.sampled_from([86400, 3 * 86400, 31 * 86400, 400 * 86400])),
    st.booleans(),  # a pre-classified vector (add_vector) instead of an event
)


def state(rc) -> dict:
    s = rc.to_state()
    s.pop("v", None)
    return s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(CONFIGS))), st.lists(event, min_size=1, max_size=150))
def test_the_fast_write_path_keeps_the_reference_rings(cfg_index: int, items: list) -> None:
    cfg = CONFIGS[cfg_index]
    new, ref = RollingCounts(cfg), ReferenceRollingCounts(cfg)
    t = T0
    for kind, sev, err, cost, dt, vector in items:
        t += dt
        if vector:
            ints, floats = [1, 0, 2, 0, 0, 1, 0, 0, 3], [0.5 if err else 0.0, cost or 0.0]
            assert new.add_vector(t, ints, floats) == ref.add_vector(t, ints, floats)
        else:
            ev = Ev(kind, t, severity=sev, status="error" if err else "ok", cost_usd=cost)
            assert new.add_event(ev) == ref.add_event(ev)
        assert state(new) == state(ref), (kind, t)


def test_a_long_dense_then_sparse_stream_keeps_the_reference_rings() -> None:
    """Thousands of events, dense (many per bucket) then sparse (one per bucket or fewer): every roll-up."""
    new, ref = RollingCounts(), ReferenceRollingCounts()
    t = T0
    for k in range(6000):
        t += 0.7 if k < 2000 else (37.0 if k < 4000 else 611.0)
        ev = Ev(KINDS[k % len(KINDS)], t, severity=("low", "critical", None)[k % 3],
                status="error" if k % 5 == 0 else "ok", cost_usd=0.001 * (k % 4))
        assert new.add_event(ev) == ref.add_event(ev)
    assert state(new) == state(ref)
