"""Loading and re-timing the OTLP JSON fixtures (built to the OTLP/JSON spec by hand)."""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "otlp" / "fixtures"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def shifted_to_now(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy whose span times end about now (the worker's windows are event-time based)."""
    doc = copy.deepcopy(doc)
    latest = max(int(s["endTimeUnixNano"]) for s in spans(doc))
    delta = time.time_ns() - latest
    for s in spans(doc):
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            s[key] = str(int(s[key]) + delta)
    return doc


def to_proto_bytes(doc: dict[str, Any]) -> bytes:
    """The same request as binary protobuf (otlp_proto), via the official OTLP protobuf classes."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto is not installed")
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    doc = copy.deepcopy(doc)
    for s in spans(doc):  # protobuf JSON carries bytes as base64; OTLP/JSON carries ids as hex
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in s:
                s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    return ParseDict(doc, ExportTraceServiceRequest()).SerializeToString()
