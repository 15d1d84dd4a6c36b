"""The contract's shipped files, found both in a source checkout and in an installed wheel.

:data:`TRACE_SCHEMA` is the JSON Schema for producers in other languages
(``schemas/trace-event-v1.json`` in the repository; ``streams/contract/data/`` in a wheel).
:data:`DEFAULT_POLICY_PATH` (re-exported from :mod:`breakers.policy`) is the default policy.
See :mod:`breakers.shipped` for how the two locations are chosen and kept identical.

>>> import json
>>> json.loads(TRACE_SCHEMA.read_text())["$id"]
'https://tripwire.dev/schemas/trace-event-v1.json'
"""

from __future__ import annotations

from breakers.policy import DEFAULT_POLICY_PATH
from breakers.shipped import shipped_file

#: package, resource inside it, path in the repository (``make schema`` writes both)
TRACE_SCHEMA_RESOURCE = ("streams.contract", "data/trace-event-v1.json", "schemas/trace-event-v1.json")
TRACE_SCHEMA = shipped_file(*TRACE_SCHEMA_RESOURCE)

__all__ = ["DEFAULT_POLICY_PATH", "TRACE_SCHEMA", "TRACE_SCHEMA_RESOURCE"]
