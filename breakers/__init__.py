"""tripwire breakers: risk budgets, breaker state machine and the decisions built on them.

Pure policy / state logic (no Kafka, no faust, no clocks, no I/O): the worker (``streams``) feeds
it evidence and time and publishes what it returns (its Alertmanager client is
``streams.worker.alertmanager``). Counter names, durations and the Wilson bound come from
``detectors``. Modules, one job each:

=================  ==========================================================================
``scope``          scope strings: parse/format/validate, ``scopes_for``, policy glob patterns
``policy``         the YAML policy (pydantic): ``load_policy``, ``check_policy_text``
``evidence``       ``EvidenceReader`` Protocol read from detectors; ``StaticEvidence`` for tests
``evaluate``       ``evaluate(policy, scope, reader) -> list[Verdict]`` (burn rates, min evidence)
``state_machine``  ``BreakerState``, ``step``, ``probe``, ``record_probe_result``, operator actions
``authz``          ``decide(...) -> Decision`` for ``GET /v1/authz`` (hot path, ~1-7 µs)
``introspect``     RFC 7662 ``introspect(token, keys, states, now, policy)`` for JWT tool tokens
``operators``      operator tokens (hashed), roles, permissions, reason / approval-TTL checks
``incidents``      incident records (timeline, actions, resolution) from transitions; markdown
=================  ==========================================================================

How the worker drives it
------------------------
For every event (agent, tool, tenant) and on a periodic tick (every few seconds) for every
scope whose state is not closed — cool-downs, hysteresis and approval expiry only advance when
``step`` is called::

    for scope in scopes_for(agent, tool, tenant):
        if not policy.budgets_for(scope) and scope not in states:
            continue
        old = states.get(scope) or BreakerState.initial(scope, now, policy)
        new, transitions = step(old, evaluate(policy, scope, reader), now, policy)
        for t in transitions: publish("breaker-events", key=scope, value=t.to_dict())
        if new != old: states[scope] = new; publish("breaker-state", key=scope, value=new.to_dict())

Half-open probes: ``decide`` returns ``Decision(probe=True, scope=S)`` while S is half_open
and has slots; the web handler then calls ``probe(states[S], now)`` (admitted → forward the
call and publish the new state; not admitted → answer 403). The worker reports each call of S
made during half_open: a ``tool_call`` event with ``status: ok`` → ``record_probe_result(ok=True)``;
a ``monitor_flag``, ``incident`` or ``status: error`` on it → ``record_probe_result(ok=False)``
(re-opens at once with back-off). The next ``step`` closes S once ``probes_required`` clean
results are in and no budget fires; if results do not come back within ``policy.probe_timeout``
the missing probe slots are re-armed.

``BreakerState.to_dict()`` (value of ``breaker-state``, key = scope), all JSON types::

    {"schema": 1, "scope": "agent:a/tool:shell", "state": "open",          # closed|open|half_open|
     "since": 1700000000.0, "reason": "weighted near-miss burn 18.2× ...", #  escalated|forced_open|shadow
     "evidence": {"budget": ..., "burn_rates": {"1h": 18.2, "5m": 22.0}, "counts": {"1h": {...}}, ...},
     "budget": "weighted-near-miss", "actor": "tripwire",
     "cooldown_s": 300.0, "open_count": 1,
     "probes_required": 0, "probes_remaining": 0, "probes_ok": 0, "probe_deadline": null,
     "clean_since": null,
     "approvals": [{"actor": "ann", "reason": "...", "expires_at": 1700003600.0, "granted_at": ...}],
     "last_revoked_at": 1700000000.0, "policy_version": "sha256:0037672...", "updated_at": ...,
     "drill": false}

``Transition.to_dict()`` (``breaker-events``): ``scope, from, to, action, reason, evidence,
policy_version, actor, ts, budget, drill``.
"""
