"""docs/metrics.md documents every metric the service exports (names normative, DESIGN.md)."""

from __future__ import annotations

import re

from .catalogue import METRICS_MD, catalogue

# name -> (type, labels) as specified for issue 5 / DESIGN.md "Metrics"
EXPECTED = {
    "tripwire_events_total": ("counter", {"kind"}),
    "tripwire_events_rejected_total": ("counter", {"reason"}),
    "tripwire_events_duplicate_total": ("counter", set()),
    "tripwire_events_late_total": ("counter", set()),
    "tripwire_evaluation_errors_total": ("counter", set()),
    "tripwire_agents_spilled_total": ("counter", set()),
    "tripwire_agents_live": ("gauge", set()),
    "tripwire_breaker_state_records_ignored_total": ("counter", {"reason"}),
    "tripwire_probe_results_ignored_total": ("counter", {"reason"}),
    "tripwire_internal_records_unauthenticated_total": ("counter", {"topic", "reason", "outcome"}),
    "tripwire_operator_actions_total": ("counter", {"action", "result"}),
    "tripwire_messages_total": ("counter", set()),
    "tripwire_consumer_lag_messages": ("gauge", {"topic", "partition"}),
    "tripwire_worker_ready": ("gauge", set()),
    "tripwire_cross_scope_decider": ("gauge", set()),
    "tripwire_build_info": ("gauge", {"version"}),
    "tripwire_near_miss_rate": ("gauge", {"agent", "tool", "window"}),
    "tripwire_near_miss_rate_upper": ("gauge", {"agent", "tool", "window"}),
    "tripwire_near_miss_rate_lower": ("gauge", {"agent", "tool", "window"}),
    "tripwire_budget_remaining_ratio": ("gauge", {"budget", "scope"}),
    "tripwire_burn_rate": ("gauge", {"budget", "scope", "window"}),
    "tripwire_budget_firing": ("gauge", {"budget", "scope", "signal"}),
    "tripwire_budget_evidence_sufficient": ("gauge", {"budget", "scope", "window"}),
    "tripwire_drill_events_total": ("counter", {"kind"}),
    "tripwire_breaker_state": ("gauge", {"scope", "state"}),
    "tripwire_breaker_state_since_timestamp_seconds": ("gauge", {"scope", "state", "drill"}),
    "tripwire_breaker_state_info": ("gauge", {"scope", "state", "budget", "reason", "evidence", "drill"}),
    "tripwire_authz_denied_total": ("counter", {"scope"}),
    "tripwire_agent_tool_calls_total": ("counter", {"agent"}),
    "tripwire_agent_near_misses_total": ("counter", {"agent"}),
    "tripwire_breaker_transitions_total": ("counter", {"from", "to"}),
    "tripwire_drift_detected_total": ("counter", {"agent", "signal"}),
    "tripwire_model_changes_total": ("counter", {"agent"}),
    "tripwire_decision_latency_seconds": ("histogram", set()),
    "tripwire_authz_requests_total": ("counter", {"decision"}),
    "tripwire_authz_request_duration_seconds": ("histogram", set()),
    "tripwire_reliability_at_k": ("gauge", {"agent", "k", "shape"}),
    "tripwire_consistency_at_k": ("gauge", {"agent", "k"}),
    "tripwire_mtbce_seconds": ("gauge", {"agent"}),
    "tripwire_mtbce_seconds_lower": ("gauge", {"agent"}),
    "tripwire_mtbce_seconds_upper": ("gauge", {"agent"}),
    "tripwire_mtbce_exposure_seconds": ("gauge", {"agent"}),
    "tripwire_intervene_to_success_ratio": ("gauge", {"agent"}),
    "tripwire_safe_refusal_precision": ("gauge", {"agent"}),
    "tripwire_safe_refusal_recall": ("gauge", {"agent"}),
    "tripwire_cost_of_confidence_usd": ("gauge", {"agent"}),
    "tripwire_cost_of_confidence_undefined": ("gauge", {"agent", "reason"}),
    "tripwire_alertmanager_posts_total": ("counter", {"result"}),
    "tripwire_policy_reloads_total": ("counter", {"result"}),
    "tripwire_policy_info": ("gauge", {"version"}),
    "tripwire_drill_runs_total": ("counter", {"result"}),
    "tripwire_drill_last_success_timestamp_seconds": ("gauge", set()),
    "tripwire_otlp_messages_total": ("counter", {"result"}),
    "tripwire_otlp_spans_total": ("counter", {"result"}),
    "tripwire_otlp_spans_skipped_total": ("counter", {"reason"}),
    "tripwire_http_ingest_requests_total": ("counter", {"status"}),
    "tripwire_http_ingest_events_total": ("counter", {"result"}),
}

REJECT_REASONS = ["empty", "too_large", "invalid_utf8", "invalid_json", "not_object", "schema",
                  "unsupported_schema_version", "unknown_kind", "future_timestamp", "key_mismatch", "bad_signature"]
KINDS = ["tool_call", "llm_call", "monitor_flag", "incident", "refusal", "escalation", "task_outcome"]
STATES = ["closed", "open", "half_open", "escalated", "forced_open", "shadow"]


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`(tripwire_[a-z0-9_]+)`\s*\|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split("|")]
    return rows


def test_catalogue_is_exactly_the_exported_metrics():
    assert set(catalogue()) == set(EXPECTED)


def test_types_and_labels():
    rows = _rows()
    for name, (typ, labels) in EXPECTED.items():
        cells = rows[name]
        assert cells[1] == typ, name
        documented = set(re.findall(r"`(\w+)`", cells[3]))
        assert documented == labels, f"{name}: labels {documented} != {labels}"
        assert cells[2], f"{name}: unit missing"
        assert len(cells[4]) > 10, f"{name}: meaning missing"


def test_metric_name_conventions():
    for name, (typ, _labels) in EXPECTED.items():
        if typ == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name


def test_label_values_and_conventions_documented():
    text = METRICS_MD.read_text(encoding="utf-8")
    for value in REJECT_REASONS + KINDS + STATES + ["5m", "30m", "1h", "6h", "1d", "3d"]:
        assert f"`{value}`" in text, value
    assert '`tool="*"`' in text and '`agent="*"`' in text and "`other`" in text.replace('`agent="other"`', "`other`")
    assert "agent:drill-" in text
