"""Reporting a drill to the deployment: ``POST /v1/drills`` and a record on ``breaker-events``."""

from __future__ import annotations

import httpx
import orjson

from streams.kafka.security import KafkaSecurity
from streams.ops.drill_result import DrillResult

#: the record key of drill results on breaker-events (one partition holds them all)
RESULT_KEY = b"drill"


def report_result(result: DrillResult, bootstrap: str, events_topic: str, api: str, token: str | None,
                  security: KafkaSecurity | None = None) -> None:
    """Tell the deployment: ``POST /v1/drills`` and a ``drill_result`` record on ``breaker-events``.

    Fills ``result.reported`` with ``ok`` or the error of each channel; never raises.
    """
    from kafka import KafkaProducer

    from streams.kafka.producer import check_broker

    doc = result.to_dict()
    try:
        check_broker(bootstrap, security or KafkaSecurity())
        producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="tripwire-drill", acks=1,
                                 max_block_ms=10_000, request_timeout_ms=10_000,
                                 **(security or KafkaSecurity()).kafka_python_kwargs())
        try:  # partition 0: where every worker looks for drill results (streams.worker.http.drills)
            producer.send(events_topic, key=RESULT_KEY, value=orjson.dumps(doc), partition=0).get(timeout=10)
        finally:
            producer.close(timeout=5)
        result.reported["breaker_events"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        result.reported["breaker_events"] = f"{type(exc).__name__}: {exc}"[:300]
    if not token:
        result.reported["api"] = "no operator token"
        return
    try:
        r = httpx.post(f"{api.rstrip('/')}/v1/drills", json=doc, headers={"Authorization": f"Bearer {token}"},
                       timeout=5)
        result.reported["api"] = "ok" if r.status_code in (200, 201) else f"HTTP {r.status_code}: {r.text[:200]}"
    except httpx.HTTPError as exc:
        result.reported["api"] = f"{type(exc).__name__}: {exc}"[:300]
