"""Operator authentication and authorisation for the breaker HTTP API and CLI.

Tokens are configured hashed: entries ``{name, role, token_sha256}`` where ``token_sha256`` is
:func:`hash_token` of a random token (make one with :func:`generate_token`; plain SHA-256 is
fine for 256-bit random secrets, it would not be for passwords). Roles are ordered
viewer < operator < admin; :data:`PERMISSIONS` maps each action to the least role allowed.

>>> reg = OperatorRegistry.from_config([{"name": "ann", "role": "operator", "token_sha256": hash_token("s3cret")}])
>>> reg.authenticate("Bearer s3cret").name, reg.authenticate("Bearer nope")
('ann', None)
>>> can(reg.authenticate("Bearer s3cret"), "reset"), can(reg.authenticate("Bearer s3cret"), "policy_reload")
(True, False)
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterable, Mapping


class Role(IntEnum):
    viewer = 1
    operator = 2
    admin = 3


PERMISSIONS: dict[str, Role] = {
    "list": Role.viewer,
    "show": Role.viewer,
    "force_open": Role.operator,
    "reset": Role.operator,
    "approve": Role.operator,
    "policy_reload": Role.admin,
}
MAX_REASON_LEN = 500
MAX_TOKEN_LEN = 4096
DEFAULT_APPROVAL_TTL_S = 3600.0
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: Role


def hash_token(token: str) -> str:
    """Hex SHA-256 of an operator token (what the config stores).

    >>> hash_token("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def generate_token() -> str:
    """A new random operator token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class OperatorRegistry:
    """Configured operators; authenticates ``Authorization: Bearer <token>`` headers."""

    def __init__(self, entries: Iterable[tuple[str, Role, bytes]]):
        self._entries = list(entries)

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any]]) -> "OperatorRegistry":
        """Build from ``[{name, role, token_sha256}]``; raises ValueError on a bad entry."""
        out = []
        for i, e in enumerate(entries):
            name, role, digest = e.get("name"), e.get("role"), str(e.get("token_sha256", "")).lower()
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"operators[{i}]: bad name")
            if role not in Role.__members__:
                raise ValueError(f"operators[{i}]: role must be one of {', '.join(Role.__members__)}")
            if not _HEX64.match(digest):
                raise ValueError(f"operators[{i}]: token_sha256 must be 64 hex characters")
            out.append((name, Role[role], bytes.fromhex(digest)))
        return cls(out)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization_header: str | None) -> Operator | None:
        """The operator whose token is presented, or None. Constant-time over all entries."""
        if not authorization_header or len(authorization_header) > MAX_TOKEN_LEN + 16:
            return None
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Operator | None = None
        for name, role, want in self._entries:  # no early exit: timing does not tell which matched
            if hmac.compare_digest(digest, want) and found is None:
                found = Operator(name, role)
        return found


def can(op: Operator | None, action: str) -> bool:
    """Is ``op`` allowed ``action``? Unknown actions need admin."""
    if op is None:
        return False
    return op.role >= PERMISSIONS.get(action, Role.admin)


def validate_reason(reason: object) -> str:
    """A stripped, non-empty reason of at most 500 characters without control characters
    (newlines and tabs allowed); raises ValueError otherwise."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a reason is required")
    reason = reason.strip()
    if len(reason) > MAX_REASON_LEN:
        raise ValueError(f"reason longer than {MAX_REASON_LEN} characters")
    if _CTRL.search(reason):
        raise ValueError("reason contains control characters")
    return reason


def approval_ttl(requested: float | None, default_s: float = DEFAULT_APPROVAL_TTL_S,
                 max_s: float = 8 * 3600.0) -> float:
    """The TTL to grant: ``default_s`` if none requested; raises ValueError if ≤ 0 or > max.

    >>> approval_ttl(None), approval_ttl(600)
    (3600.0, 600.0)
    """
    if requested is None:
        return float(min(default_s, max_s))
    try:
        ttl = float(requested)
    except (TypeError, ValueError):
        raise ValueError("ttl must be a number of seconds") from None
    if not ttl > 0 or ttl != ttl:
        raise ValueError("ttl must be positive")
    if ttl > max_s:
        raise ValueError(f"ttl longer than the maximum of {max_s:.0f}s")
    return ttl
