"""Signed traces: HMAC-SHA256 message signatures and the policy that requires them.

A producer signs a Kafka message of ``agent-traces`` with two headers (DESIGN.md)::

    tripwire-signature: v1=<hex HMAC-SHA256 of the message value>
    tripwire-key-id:    <id of the key in the worker's signing_keys>

Several key ids can be configured at once (``signing_keys``), so a key is rotated by
adding the new id, moving producers over, then removing the old one.

Which events must be signed is configuration (``require_signature``: scope globs
``*``, ``agent:<glob>``, ``tenant:<glob>``, ``tenant:<glob>/agent:<glob>``). The
requirement depends on the agent and tenant, and for a batch those are only known
after parsing, so the check runs in two steps (:class:`SignaturePolicy`):

1. before parsing, :meth:`SignaturePolicy.check_message`: a message that carries a
   signature is verified; a bad one (unknown key id, malformed header, mismatch)
   rejects the whole message. An unsigned message whose *key* (the agent id) alone
   is covered by a requirement is rejected before any JSON is parsed, so a forged
   flood costs one header lookup per message.
2. after parsing, :meth:`SignaturePolicy.requires`: events of an unsigned message
   whose tenant/agent requires a signature are rejected one by one.

Every reject has the reason ``bad_signature``. Keys never appear in logs, details or
``repr``.

>>> pol = SignaturePolicy({"k1": b"s3cret"}, ["agent:pay-*"])
>>> value = b'{"x":1}'
>>> pol.check_message(b"pay-1", value, [("tripwire-signature", sign_value(value, b"s3cret").encode()),
...                                     ("tripwire-key-id", b"k1")])
(True, None)
>>> pol.check_message(b"pay-1", value, [])
(False, "agent 'pay-1' requires a signed message (no tripwire-signature header)")
>>> pol.check_message(b"search-1", value, [])
(False, None)
>>> pol.requires("search-1", "acme"), pol.requires("pay-2", None)
(False, True)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

SIGNATURE_HEADER = "tripwire-signature"
KEY_ID_HEADER = "tripwire-key-id"
_SCHEME = "v1="


class SigningConfigError(ValueError):
    """``require_signature`` / ``signing_keys`` cannot work as configured."""


def sign_value(value: bytes, secret: bytes) -> str:
    """The ``tripwire-signature`` header value for ``value``."""
    return _SCHEME + hmac.new(secret, value, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``require_signature`` entry: tenant and agent globs (None = any)."""

    tenant: str | None
    agent: str | None

    @classmethod
    def parse(cls, pattern: str) -> "Requirement":
        """``*`` | ``agent:<glob>`` | ``tenant:<glob>`` | ``tenant:<glob>/agent:<glob>``."""
        text = pattern.strip()
        if text in ("*", "global"):
            return cls(None, None)
        tenant: str | None = None
        agent: str | None = None
        for part in text.split("/"):
            kind, sep, glob = part.partition(":")
            if not sep or not glob:
                raise SigningConfigError(f"require_signature entry {pattern!r}: expected '*', 'agent:<glob>', "
                                         "'tenant:<glob>' or 'tenant:<glob>/agent:<glob>'")
            if kind == "tenant" and tenant is None and agent is None:
                tenant = glob
            elif kind == "agent" and agent is None:
                agent = glob
            else:
                raise SigningConfigError(f"require_signature entry {pattern!r}: unexpected part {part!r}")
        return cls(tenant, agent)

    def matches(self, agent: str, tenant: str | None) -> bool:
        if self.tenant is not None and (tenant is None or not fnmatchcase(tenant, self.tenant)):
            return False
        return self.agent is None or fnmatchcase(agent, self.agent)


def _header(headers: Iterable[tuple[str | bytes, bytes | None]], name: str) -> bytes | None:
    """The first value of header ``name`` (names compared case-insensitively, str or bytes)."""
    for k, v in headers:
        key = k.decode("latin-1") if isinstance(k, bytes) else k
        if key.lower() == name:
            return v if v is not None else b""
    return None


class SignaturePolicy:
    """Verify message signatures and decide which events must be signed."""

    __slots__ = ("_keys", "_rules", "_key_rules")

    def __init__(self, keys: Mapping[str, bytes], require: Sequence[str] = ()) -> None:
        self._keys = dict(keys)
        self._rules = tuple(Requirement.parse(p) for p in require)
        if self._rules and not self._keys:
            raise SigningConfigError("require_signature is set but signing_keys is empty: "
                                     "no message could ever be accepted for those scopes")
        #: rules decidable from the message key alone (no tenant condition)
        self._key_rules = tuple(r for r in self._rules if r.tenant is None)

    def __repr__(self) -> str:  # never show secrets
        return f"SignaturePolicy(key_ids={sorted(self._keys)}, rules={len(self._rules)})"

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def enforcing(self) -> bool:
        """True when some events must be signed."""
        return bool(self._rules)

    def requires(self, agent: str, tenant: str | None) -> bool:
        """Must an event of ``agent`` (and ``tenant``) come in a validly signed message?"""
        return any(r.matches(agent, tenant) for r in self._rules)

    def verify(self, value: bytes, headers: Iterable[tuple[str | bytes, bytes | None]]) -> tuple[bool, str | None]:
        """(signed, problem): ``(False, None)`` unsigned; ``(True, None)`` valid; ``(False, why)`` bad."""
        signature = _header(headers, SIGNATURE_HEADER)
        if signature is None:
            return False, None
        if not self._keys:
            return False, None  # nothing to verify with: treated as unsigned
        key_id_raw = _header(headers, KEY_ID_HEADER)
        if not key_id_raw:
            return False, f"signed message without a {KEY_ID_HEADER} header"
        key_id = key_id_raw.decode("utf-8", "replace")
        secret = self._keys.get(key_id)
        if secret is None:
            return False, f"unknown signing key id {key_id[:64]!r}"
        text = signature.decode("ascii", "replace").strip()
        if not text.startswith(_SCHEME):
            return False, f"{SIGNATURE_HEADER} must be 'v1=<hex>'"
        expected = sign_value(value, secret)
        if not hmac.compare_digest(expected.encode(), text.encode()):
            return False, f"signature does not match (key id {key_id[:64]!r})"
        return True, None

    def check_message(self, key: bytes | None, value: bytes,
                      headers: Iterable[tuple[str | bytes, bytes | None]] | None) -> tuple[bool, str | None]:
        """Step 1 (before parsing): (signed, reject detail or None) for one message."""
        signed, problem = self.verify(value, headers or ())
        if problem is not None or signed or not self._key_rules or not key:
            return signed, problem
        agent = key.decode("utf-8", "replace")
        if any(r.matches(agent, None) for r in self._key_rules):
            return False, f"agent {agent[:64]!r} requires a signed message (no {SIGNATURE_HEADER} header)"
        return False, None

    @classmethod
    def from_settings(cls, signing_keys: Mapping[str, object], require: Sequence[str]) -> "SignaturePolicy | None":
        """Build from ``Settings.signing_keys`` (SecretStr values) and ``require_signature``; None if unused."""
        if not signing_keys and not require:
            return None
        keys: dict[str, bytes] = {}
        for key_id, secret in signing_keys.items():
            raw = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
            keys[key_id] = raw.encode("utf-8")
        return cls(keys, list(require))


__all__ = ["KEY_ID_HEADER", "SIGNATURE_HEADER", "Requirement", "SignaturePolicy", "SigningConfigError", "sign_value"]
