"""The policy's ``reliability`` section reaches the exported reliability families (no broker):
``attempt_kind`` overrides the detected shape, ``materiality`` picks the MTBCE incidents,
``confidence`` the cost-of-confidence level, and a reload applies at the next scrape."""

from __future__ import annotations

import math
from itertools import count

from breakers.policy import Policy
from helpers.reliability_truth import truth_retry, truth_trials
from streams.contract.schema import TraceEvent
from streams.engine.labels import LabelCap
from streams.engine.monitor import Monitor
from streams.worker.views import _reliability

T0 = 1_790_000_000.0
_ids = count()


def _ev(ts: float, kind: str, **kw: object) -> TraceEvent:
    return TraceEvent.model_validate({"schema_version": "1", "event_id": f"p{next(_ids)}", "ts": int(ts * 1000),
                                      "agent_id": "a", "kind": kind, **kw})


def _rows(mon: Monitor) -> dict[str, dict[tuple[str, ...], float]]:
    return {fam.name: {tuple(s.labels.values()): s.value for s in fam.samples}
            for fam in _reliability(mon, LabelCap(10))}


def test_policy_reliability_section_is_read_at_scrape_time() -> None:
    seqs = ["S", "FS", "FFS", "S"]  # retry-shaped
    mon = Monitor(Policy())
    evs = [_ev(T0, "task_outcome", task_id=f"t{i}", attempt=a, outcome="success" if o == "S" else "failure")
               for i, s in enumerate(seqs) for a, o in enumerate(s, 1)]
    evs += [_ev(T0 + 60, "incident", severity="low"), _ev(T0 + 120, "incident", severity="high"),
            _ev(T0 + 7_200, "llm_call", cost_usd=1.4)]
    mon.ingest(0, evs)
    r = _rows(mon)
    assert math.isclose(r["tripwire_reliability_at_k"][("a", "1", "retry")], truth_retry(seqs, 1, given_up=True))
    assert "tripwire_consistency_at_k" not in r or not r["tripwire_consistency_at_k"]
    assert r["tripwire_mtbce_seconds"][("a",)] == 7_200  # default materiality high: 1 incident
    # confidence 0.95: all tasks succeed by attempt 3 -> 3 x (1.4 / 7 attempts)
    assert math.isclose(r["tripwire_cost_of_confidence_usd"][("a",)], 3 * 1.4 / 7)

    mon.set_policy(Policy.model_validate({"reliability": {"attempt_kind": "trial", "materiality": "low",
                                                           "confidence": 0.5}}))
    r = _rows(mon)
    assert ("a", "1", "retry") not in r["tripwire_reliability_at_k"]
    assert math.isclose(r["tripwire_reliability_at_k"][("a", "1", "trial")], truth_trials(seqs, 1)[0])
    assert math.isclose(r["tripwire_consistency_at_k"][("a", "1")], truth_trials(seqs, 1)[1])
    assert r["tripwire_mtbce_seconds"][("a",)] == 3_600  # both incidents are material now
    # pass@1 = 0.708 >= 0.5 -> one attempt
    assert math.isclose(r["tripwire_cost_of_confidence_usd"][("a",)], 1.4 / 7)
