"""Signed traces: HMAC-SHA256 message signatures, key bindings, and what an ATTESTED message is.

A producer signs a Kafka message of ``agent-traces`` with two headers (DESIGN.md)::

    tripwire-signature: v1=<hex HMAC-SHA256 of the message value>
    tripwire-key-id:    <id of the key in the worker's signing_keys>

(over HTTP, ``POST /v1/traces`` takes the same pair as ``X-Tripwire-Signature`` and
``X-Tripwire-Key-Id`` and forwards the body verbatim as one Kafka message). Several key ids
can be configured at once (``signing_keys``), so a key is rotated by adding the new id,
moving producers over, then removing the old one.

**Bindings.** ``signing_key_scopes`` binds a key id to scope globs (``*``, ``agent:<glob>``,
``tenant:<glob>``, ``tenant:<glob>/agent:<glob>``); a key without an entry is bound to every
agent and tenant. A binding with a tenant glob does *not* cover an event without a tenant
(fail closed: its tenant is unknown).

**Attested.** A message is *attested* when its signature verifies with a configured key and
that key's binding covers every event's agent and tenant (an event outside the binding is
rejected, so what reaches the monitor from a signed message is attested as a whole). The
worker never signs on behalf of a producer: events that came in unsigned (Kafka, HTTP JSON,
OTLP) stay unattested.

**Requirements.** ``require_signature`` (same grammar) says which events must come in an
attested message. A requirement with a tenant glob *matches* an event without a tenant
(fail closed: omitting ``tenant`` cannot dodge ``tenant:acme``). The requirement depends on
the agent and tenant, and for a batch those are only known after parsing, so the check runs
in two steps:

1. before parsing, :meth:`SignaturePolicy.seal`: a message that carries a signature is
   verified; a bad one (unknown key id, malformed header, mismatch) rejects the whole
   message. An unsigned message whose *key* (the agent id) alone is covered by a
   requirement (or is a drill agent while ``drill_key_id`` is set) is rejected before any
   JSON is parsed, so a forged flood costs one header lookup per message.
2. after parsing, :meth:`SignaturePolicy.event_problem`, per event: unsigned events that
   require a signature, signed events outside their key's binding, drill traffic not signed
   with the drill key, and non-drill events signed with the drill key.

**Drill traffic.** With ``drill_key_id`` set, an event of a drill agent (id starting with the
policy's ``drill_prefix``) must come signed with that key, and that key signs drill agents
only. Every reject has the reason ``bad_signature``. Keys never appear in logs, details or
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

Bindings and the drill key:

>>> pol = SignaturePolicy({"k1": b"a", "drill": b"b"}, ["tenant:acme"],
...                       {"k1": ["tenant:acme/agent:bot-*"]}, drill_key_id="drill")
>>> pol.requires("bot-1", None)  # no tenant: it might be acme's
True
>>> print(pol.event_problem("k1", "bot-1", "acme"))
None
>>> pol.event_problem("k1", "pay-1", "acme")
"key 'k1' is not bound to agent 'pay-1' of tenant 'acme'"
>>> pol.event_problem("k1", "bot-1", None)
"key 'k1' is not bound to agent 'bot-1' without a tenant"
>>> pol.event_problem("k1", "drill-bot", "acme")
"drill agent 'drill-bot' must come signed with the drill key 'drill'"
>>> pol.event_problem("drill", "bot-1", "acme")
"the drill key 'drill' signs drill agents only, not agent 'bot-1'"
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from breakers.policy import Policy

SIGNATURE_HEADER = "tripwire-signature"
KEY_ID_HEADER = "tripwire-key-id"
#: the same pair on ``POST /v1/traces`` (HTTP header names are case-insensitive)
HTTP_SIGNATURE_HEADER = "X-Tripwire-Signature"
HTTP_KEY_ID_HEADER = "X-Tripwire-Key-Id"
_SCHEME = "v1="
#: agent ids starting with this are drill agents unless the policy says otherwise (owner: breakers.policy)
DEFAULT_DRILL_PREFIX: str = Policy.model_fields["drill_prefix"].default


class SigningConfigError(ValueError):
    """``require_signature`` / ``signing_keys`` / ``signing_key_scopes`` / ``drill_key_id`` cannot work."""


def sign_value(value: bytes, secret: bytes) -> str:
    """The ``tripwire-signature`` header value for ``value``."""
    return _SCHEME + hmac.new(secret, value, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Requirement:
    """One scope glob of ``require_signature`` or of a key binding: tenant and agent globs (None = any)."""

    tenant: str | None
    agent: str | None

    @classmethod
    def parse(cls, pattern: str, setting: str = "require_signature") -> "Requirement":
        """``*`` | ``agent:<glob>`` | ``tenant:<glob>`` | ``tenant:<glob>/agent:<glob>``."""
        text = pattern.strip() if isinstance(pattern, str) else ""
        if text in ("*", "global"):
            return cls(None, None)
        tenant: str | None = None
        agent: str | None = None
        for part in text.split("/"):
            kind, sep, glob = part.partition(":")
            if not sep or not glob:
                raise SigningConfigError(f"{setting} entry {pattern!r}: expected '*', 'agent:<glob>', "
                                         "'tenant:<glob>' or 'tenant:<glob>/agent:<glob>'")
            if kind == "tenant" and tenant is None and agent is None:
                tenant = glob
            elif kind == "agent" and agent is None:
                agent = glob
            else:
                raise SigningConfigError(f"{setting} entry {pattern!r}: unexpected part {part!r}")
        return cls(tenant, agent)

    def matches(self, agent: str, tenant: str | None, *, tenantless: bool = True) -> bool:
        """Does the glob pair match? ``tenantless``: what a tenant glob says of an event without a tenant.

        >>> r = Requirement.parse("tenant:acme")
        >>> r.matches("a", "acme"), r.matches("a", "other"), r.matches("a", None), r.matches("a", None, tenantless=False)
        (True, False, True, False)
        """
        if self.tenant is not None:
            if tenant is None:
                if not tenantless:
                    return False
            elif not fnmatchcase(tenant, self.tenant):
                return False
        return self.agent is None or fnmatchcase(agent, self.agent)


def _header(headers: Iterable[tuple[str | bytes, bytes | None]], name: str) -> bytes | None:
    """The first value of header ``name`` (names compared case-insensitively, str or bytes)."""
    for k, v in headers:
        key = k.decode("latin-1") if isinstance(k, bytes) else k
        if key.lower() == name:
            return v if v is not None else b""
    return None


def _who(agent: str, tenant: str | None) -> str:
    return f"agent {agent[:64]!r}" + (f" of tenant {tenant[:64]!r}" if tenant is not None else "")


class SignaturePolicy:
    """Verify message signatures, check key bindings and decide which events must be signed."""

    __slots__ = ("_keys", "_rules", "_key_rules", "_bindings", "drill_key_id", "drill_prefix")

    def __init__(self, keys: Mapping[str, bytes], require: Sequence[str] = (),
                 bindings: Mapping[str, Sequence[str]] | None = None, *, drill_key_id: str | None = None,
                 drill_prefix: str = DEFAULT_DRILL_PREFIX) -> None:
        self._keys = dict(keys)
        self._rules = tuple(Requirement.parse(p) for p in require)
        if self._rules and not self._keys:
            raise SigningConfigError("require_signature is set but signing_keys is empty: "
                                     "no message could ever be accepted for those scopes")
        #: rules decidable from the message key alone (no tenant condition)
        self._key_rules = tuple(r for r in self._rules if r.tenant is None)
        self._bindings: dict[str, tuple[Requirement, ...]] = {}
        for key_id, globs in (bindings or {}).items():
            if key_id not in self._keys:
                raise SigningConfigError(f"signing_key_scopes names key id {key_id[:64]!r}, which is not in "
                                         "signing_keys (a typo would leave the real key bound to everything)")
            if isinstance(globs, str) or not globs:
                raise SigningConfigError(f"signing_key_scopes[{key_id[:64]!r}] must be a non-empty list of globs")
            self._bindings[key_id] = tuple(Requirement.parse(g, "signing_key_scopes") for g in globs)
        if drill_key_id is not None and drill_key_id not in self._keys:
            raise SigningConfigError(f"drill_key_id {drill_key_id[:64]!r} is not a key id of signing_keys")
        self.drill_key_id = drill_key_id
        self.drill_prefix = drill_prefix

    def __repr__(self) -> str:  # never show secrets
        return (f"SignaturePolicy(key_ids={sorted(self._keys)}, rules={len(self._rules)}, "
                f"bound={sorted(self._bindings)}, drill_key_id={self.drill_key_id!r})")

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def enforcing(self) -> bool:
        """True when some events of an unsigned message can be refused (a requirement or a drill key)."""
        return bool(self._rules) or self.drill_key_id is not None

    def requires(self, agent: str, tenant: str | None) -> bool:
        """Must an event of ``agent`` (and ``tenant``; None = unknown, matches tenant rules) be signed?"""
        return any(r.matches(agent, tenant) for r in self._rules)

    def bound(self, key_id: str, agent: str, tenant: str | None) -> bool:
        """Does key ``key_id``'s binding cover ``agent`` of ``tenant`` (a tenant glob never covers None)?"""
        rules = self._bindings.get(key_id)
        return rules is None or any(r.matches(agent, tenant, tenantless=False) for r in rules)

    def is_drill(self, agent: str) -> bool:
        return agent.startswith(self.drill_prefix)

    def event_problem(self, key_id: str | None, agent: str, tenant: str | None) -> str | None:
        """Why an event of ``agent``/``tenant`` in a message verified with ``key_id`` (None: unsigned) is refused."""
        drill_key = self.drill_key_id
        if key_id is None:
            if self.requires(agent, tenant):
                return f"{_who(agent, tenant)} requires a signed message"
            if drill_key is not None and self.is_drill(agent):
                return f"drill agent {agent[:64]!r} must come signed with the drill key {drill_key[:64]!r}"
            return None
        if drill_key is not None:
            if self.is_drill(agent) and key_id != drill_key:
                return f"drill agent {agent[:64]!r} must come signed with the drill key {drill_key[:64]!r}"
            if key_id == drill_key and not self.is_drill(agent):
                return f"the drill key {drill_key[:64]!r} signs drill agents only, not agent {agent[:64]!r}"
        if not self.bound(key_id, agent, tenant):
            where = f" of tenant {tenant[:64]!r}" if tenant is not None else " without a tenant"
            return f"key {key_id[:64]!r} is not bound to agent {agent[:64]!r}{where}"
        return None

    def verify(self, value: bytes, headers: Iterable[tuple[str | bytes, bytes | None]]) -> tuple[str | None, str | None]:
        """(key id, problem): ``(None, None)`` unsigned; ``(id, None)`` valid; ``(None, why)`` bad."""
        signature = _header(headers, SIGNATURE_HEADER)
        if signature is None:
            return None, None
        if not self._keys:
            return None, None  # nothing to verify with: treated as unsigned (unattested)
        key_id_raw = _header(headers, KEY_ID_HEADER)
        if not key_id_raw:
            return None, f"signed message without a {KEY_ID_HEADER} header"
        key_id = key_id_raw.decode("utf-8", "replace")
        secret = self._keys.get(key_id)
        if secret is None:
            return None, f"unknown signing key id {key_id[:64]!r}"
        text = signature.decode("ascii", "replace").strip()
        if not text.startswith(_SCHEME):
            return None, f"{SIGNATURE_HEADER} must be 'v1=<hex>'"
        expected = sign_value(value, secret)
        if not hmac.compare_digest(expected.encode(), text.encode()):
            return None, f"signature does not match (key id {key_id[:64]!r})"
        return key_id, None

    def seal(self, key: bytes | None, value: bytes,
             headers: Iterable[tuple[str | bytes, bytes | None]] | None) -> tuple[str | None, str | None]:
        """Step 1 (before parsing): (verified key id or None, reject detail or None) for one message."""
        key_id, problem = self.verify(value, headers or ())
        if problem is not None or not key:
            return key_id, problem
        agent = key.decode("utf-8", "replace")
        if key_id is None:
            if any(r.matches(agent, None) for r in self._key_rules):
                return None, f"agent {agent[:64]!r} requires a signed message (no {SIGNATURE_HEADER} header)"
            if self.drill_key_id is not None and self.is_drill(agent):
                return None, (f"drill agent {agent[:64]!r} must come signed with the drill key "
                              f"{self.drill_key_id[:64]!r}")
        return key_id, None

    def check_message(self, key: bytes | None, value: bytes,
                      headers: Iterable[tuple[str | bytes, bytes | None]] | None) -> tuple[bool, str | None]:
        """:meth:`seal` as (validly signed, reject detail or None)."""
        key_id, problem = self.seal(key, value, headers)
        return key_id is not None, problem

    @classmethod
    def from_settings(cls, signing_keys: Mapping[str, object], require: Sequence[str],
                      bindings: Mapping[str, Sequence[str]] | None = None, drill_key_id: str | None = None,
                      drill_prefix: str = DEFAULT_DRILL_PREFIX) -> "SignaturePolicy | None":
        """Build from ``Settings.signing_keys`` (SecretStr values), ``require_signature``,
        ``signing_key_scopes`` and ``drill_key_id``; None if signing is unused."""
        if not signing_keys and not require and not bindings and drill_key_id is None:
            return None
        keys: dict[str, bytes] = {}
        for key_id, secret in signing_keys.items():
            raw = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
            keys[key_id] = raw.encode("utf-8")
        return cls(keys, list(require), bindings, drill_key_id=drill_key_id, drill_prefix=drill_prefix)

    @classmethod
    def of(cls, settings: object, drill_prefix: str = DEFAULT_DRILL_PREFIX) -> "SignaturePolicy | None":
        """The policy of a :class:`~streams.settings.Settings` (duck-typed: contract does not import settings)."""
        return cls.from_settings(getattr(settings, "signing_keys"), getattr(settings, "require_signature"),
                                 getattr(settings, "signing_key_scopes", None),
                                 getattr(settings, "drill_key_id", None), drill_prefix)


__all__ = ["DEFAULT_DRILL_PREFIX", "HTTP_KEY_ID_HEADER", "HTTP_SIGNATURE_HEADER", "KEY_ID_HEADER",
           "SIGNATURE_HEADER", "Requirement", "SignaturePolicy", "SigningConfigError", "sign_value"]
