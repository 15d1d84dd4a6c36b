from __future__ import annotations

import json

from breakers.incidents import Incident, IncidentTracker
from breakers.state_machine import BreakerState, approve, reset, step

from helpers.breakers import T0, verdict


def test_incident_from_escalation_with_approval_and_reset(sm_policy):
    tr = IncidentTracker()
    s = BreakerState.initial("agent:drill-9", T0, sm_policy)
    s, ts = step(s, [verdict("esc", "escalate", scope=s.scope)], T0, sm_policy)
    inc = tr.apply(ts[0])
    assert inc is not None and inc.state == "open" and inc.drill
    assert inc.trigger["to"] == "escalated" and inc.evidence["burn_rates"]["1h"] == 20.0
    s, ts = approve(s, "ann", "refund is legit", T0 + 10, 600)
    tr.apply(ts[0])
    s, ts = reset(s, "ann", "root cause fixed", T0 + 100)
    done = tr.apply(ts[0])
    assert done is inc and inc.state == "resolved" and "agent:drill-9" not in tr.open
    assert inc.resolution["by"] == "ann" and inc.resolution["duration_s"] == 100
    assert [a["action"] for a in inc.actions] == ["approve", "reset"]
    assert len(inc.timeline) == 3
    again = Incident.from_dict(json.loads(json.dumps(inc.to_dict())))
    assert again == inc
    md = inc.to_markdown()
    assert md.startswith(f"# Incident {inc.id} (drill)")
    for text in ("## Timeline", "| escalated | escalated | approve | ann |", "root cause fixed", "## Resolution"):
        assert text in md


def test_transitions_between_allowed_states_open_nothing(sm_policy):
    tr = IncidentTracker()
    s = BreakerState.initial("agent:a", T0, sm_policy)
    s, ts = step(s, [verdict("shd", "shadow")], T0, sm_policy)
    assert tr.apply(ts[0]) is None and not tr.open


def test_markdown_escapes_table_breakers(sm_policy):
    s = BreakerState.initial("agent:a|b", T0, sm_policy)
    s, ts = step(s, [verdict("trip", "open", scope=s.scope)], T0, sm_policy)
    inc = IncidentTracker().apply(ts[0])
    md = inc.to_markdown()
    assert "agent:a\\|b" in md and "Unresolved." in md
