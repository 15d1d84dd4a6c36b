"""Authenticated internal records: what a worker writes to ``breaker-state``, ``breaker-events`` and
``scope-partials`` carries an HMAC the readers check.

A record is signed with a key of the signing keyring (``signing_keys``) named by ``internal_key_ids``
(the first one signs; all of them verify, for rotation; default: the first key id in sorted order).
Two Kafka headers::

    tripwire-record-signature: r1=<hex HMAC-SHA256 over purpose, key and value>
    tripwire-record-key-id:    <key id>

The MAC covers the topic's *role* (``purpose``: ``breaker-state``, ``breaker-events``,
``scope-partials``, never the configurable topic name), the record key and the value (a tombstone
is distinct from an empty value), each length-prefixed: a record signed for one topic or key does
not verify for another, and a trace signature (``v1=``, over the value alone) never verifies here.

Modes (``internal_auth``):

* no keyring configured: nothing is signed and every record is accepted — authentication is
  impossible; Kafka ACLs on the internal topics are then the only protection.
* ``required`` (the default once a keyring is configured): unsigned and badly signed records are
  ignored and counted.
* ``permissive`` (rolling upgrade from an unsigned deployment): unsigned records are accepted
  and counted; badly signed ones are still ignored (no honest worker writes one).

>>> auth = RecordAuth({"k1": b"secret"})
>>> hdrs = auth.headers("breaker-state", b"agent:a", b'{"s":1}')
>>> [name for name, _ in hdrs]
['tripwire-record-signature', 'tripwire-record-key-id']
>>> auth.check("breaker-state", b"agent:a", b'{"s":1}', hdrs)
(True, None)
>>> auth.check("breaker-state", b"agent:b", b'{"s":1}', hdrs)   # another key: the MAC does not match
(False, 'bad_signature')
>>> auth.check("breaker-events", b"agent:a", b'{"s":1}', hdrs)  # another topic role
(False, 'bad_signature')
>>> auth.check("breaker-state", b"agent:a", b'{"s":1}', [])
(False, 'unauthenticated')
>>> RecordAuth({"k1": b"secret"}, mode="permissive").check("breaker-state", b"agent:a", b"{}", [])
(True, 'unauthenticated')
>>> RecordAuth({}).check("breaker-state", b"agent:a", b"{}", [])   # no keyring: nothing to check with
(True, None)
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

RECORD_SIGNATURE_HEADER = "tripwire-record-signature"
RECORD_KEY_ID_HEADER = "tripwire-record-key-id"
_SCHEME = "r1="
_DOMAIN = b"tripwire-record-v1"

#: topic roles a MAC is bound to (the defaults of the topic names, but fixed: renaming a topic changes nothing)
BREAKER_STATE = "breaker-state"
BREAKER_EVENTS = "breaker-events"
SCOPE_PARTIALS = "scope-partials"
PURPOSES = (BREAKER_STATE, BREAKER_EVENTS, SCOPE_PARTIALS)

#: why a record is not authenticated (label values of the metrics that count them)
UNAUTHENTICATED = "unauthenticated"
BAD_SIGNATURE = "bad_signature"
REASONS = (UNAUTHENTICATED, BAD_SIGNATURE)

AuthMode = Literal["permissive", "required"]
AUTH_MODES: tuple[str, ...] = ("permissive", "required")

Headers = Iterable[tuple[str | bytes, bytes | None]]


def _part(data: bytes | None) -> bytes:
    if data is None:
        return b"\xff"  # a tombstone (or a missing key) differs from an empty value
    return len(data).to_bytes(8, "big") + data


def record_mac(secret: bytes, purpose: str, key: bytes | None, value: bytes | None) -> str:
    """The ``tripwire-record-signature`` header value of one record.

    >>> record_mac(b"s", "breaker-state", b"k", None) != record_mac(b"s", "breaker-state", b"k", b"")
    True
    """
    mac = hmac.new(secret, _DOMAIN, hashlib.sha256)
    mac.update(_part(purpose.encode()))
    mac.update(_part(key))
    mac.update(_part(value))
    return _SCHEME + mac.hexdigest()


def _header(headers: Headers, name: str) -> bytes | None:
    for k, v in headers or ():
        if (k.decode("latin-1") if isinstance(k, bytes) else k).lower() == name:
            return v if v is not None else b""
    return None


class RecordAuth:
    """Signs the records a worker writes and checks the ones it reads; counts what it refused.

    ``keys``: the keys records may be signed with (id → secret), the first in ``key_ids`` signs.
    Empty: authentication is off (everything accepted, nothing signed).
    """

    __slots__ = ("_keys", "_signer", "counts", "mode")

    def __init__(self, keys: Mapping[str, bytes], key_ids: Sequence[str] = (), mode: AuthMode = "required") -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"internal_auth must be one of {', '.join(AUTH_MODES)}")
        ids = list(key_ids) or sorted(keys)[:1]
        unknown = [k for k in ids if k not in keys]
        if unknown:
            raise ValueError(f"internal_key_ids names keys not in signing_keys: {', '.join(map(ascii, unknown))}")
        self._keys = {k: keys[k] for k in ids}
        self._signer = ids[0] if ids else None
        self.mode: AuthMode = mode
        #: (purpose, reason, outcome) → records; outcome ``ignored`` or ``accepted`` (permissive, unsigned)
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def __repr__(self) -> str:  # never show secrets
        return f"RecordAuth(key_ids={sorted(self._keys)}, mode={self.mode!r})"

    @property
    def enabled(self) -> bool:
        """True when records are signed and checked (a keyring is configured)."""
        return self._signer is not None

    @classmethod
    def from_settings(cls, signing_keys: Mapping[str, object], key_ids: Sequence[str] = (),
                      mode: AuthMode = "required") -> RecordAuth:
        """From ``Settings.signing_keys`` (SecretStr values), ``internal_key_ids`` and ``internal_auth``."""
        keys = {}
        for key_id, secret in signing_keys.items():
            raw = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
            keys[key_id] = raw.encode("utf-8")
        return cls(keys, key_ids, mode)

    def headers(self, purpose: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """The headers that authenticate one record (none when authentication is off)."""
        if self._signer is None:
            return []
        mac = record_mac(self._keys[self._signer], purpose, key, value)
        return [(RECORD_SIGNATURE_HEADER, mac.encode()), (RECORD_KEY_ID_HEADER, self._signer.encode())]

    def check(self, purpose: str, key: bytes | None, value: bytes | None,
              headers: Headers | None) -> tuple[bool, str | None]:
        """(accept, problem): problem is ``unauthenticated`` / ``bad_signature`` or None. Counted."""
        if self._signer is None:
            return True, None
        problem = self._problem(purpose, key, value, headers or ())
        if problem is None:
            return True, None
        accept = problem == UNAUTHENTICATED and self.mode == "permissive"
        self.counts[(purpose, problem, "accepted" if accept else "ignored")] += 1
        return accept, problem

    def _problem(self, purpose: str, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        signature = _header(headers, RECORD_SIGNATURE_HEADER)
        if signature is None:
            return UNAUTHENTICATED
        key_id = (_header(headers, RECORD_KEY_ID_HEADER) or b"").decode("utf-8", "replace")
        secret = self._keys.get(key_id)
        if secret is None:
            return BAD_SIGNATURE
        expected = record_mac(secret, purpose, key, value).encode()
        return None if hmac.compare_digest(expected, signature.strip()) else BAD_SIGNATURE


__all__ = [
    "AUTH_MODES",
    "BAD_SIGNATURE",
    "BREAKER_EVENTS",
    "BREAKER_STATE",
    "PURPOSES",
    "REASONS",
    "RECORD_KEY_ID_HEADER",
    "RECORD_SIGNATURE_HEADER",
    "SCOPE_PARTIALS",
    "UNAUTHENTICATED",
    "AuthMode",
    "RecordAuth",
    "record_mac",
]
