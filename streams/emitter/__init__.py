"""The emitter: what agent code imports to send trace events to tripwire (batching, signing, bounded buffer).

``from streams.emitter import Emitter`` is the public entry point; the implementation lives in
:mod:`streams.emitter.client`.
"""

from streams.emitter.client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Emitter,
    InvalidEvent,
    check,
    new_event_id,
    pack_messages,
    sign,
    signature_headers,
)

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Emitter", "InvalidEvent", "check", "new_event_id", "pack_messages", "sign",
           "signature_headers"]
