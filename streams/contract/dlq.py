"""Dead-letter records: what was rejected, why, and where it came from."""

from __future__ import annotations

import base64
import time

import orjson

from streams.contract.decode import Reject


def dlq_record(
    reject: Reject,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    payload_limit: int,
) -> bytes:
    """The JSON value of one ``agent-traces-dlq`` message.

    For a rejected batch element the payload is that element, not the whole batch,
    so the good events of the batch are not duplicated in the dead-letter topic.
    """
    payload = reject.element if reject.index is not None and reject.element is not None else (value or b"")
    kept = payload[:payload_limit]
    record = {
        "reason": reject.reason,
        "detail": reject.detail,
        "source": {"topic": topic, "partition": partition, "offset": offset, "index": reject.index},
        # the key is bounded like the payload: a huge key would make the dead letter too large to send
        "key_b64": base64.b64encode(key[:payload_limit]).decode() if key else None,
        "key_bytes": len(key) if key else 0,
        "payload_b64": base64.b64encode(kept).decode(),
        "payload_bytes": len(payload),
        "payload_truncated": len(payload) > len(kept),
        "rejected_at": time.time(),
    }
    return orjson.dumps(record)
