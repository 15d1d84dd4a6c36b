"""RFC 7662 introspection of JWT tool tokens (PyJWT), combined with breaker state.

Tool tokens are JWTs with claims ``sub`` (agent id), ``tool``, optional ``tenant``, ``jti``,
``iat``, ``exp`` (and optional ``nbf``, ``iss``, ``aud``), signed HS256 or RS256 with a key
named by the header ``kid``. The algorithm comes from the configured key, never from the token
(no alg confusion, no ``none``). A token is inactive (``{"active": false}``) when it is
malformed, too large, unsigned/wrongly signed, of an unknown ``kid``, expired, not yet valid,
missing a claim, when authz currently denies its (agent, tool, tenant), or when it was issued
before a revocation of any of its scopes (``iat < last_revoked_at``; ``iat`` has one-second
resolution, so a token minted in the same second as a revocation is also treated as revoked).

The ``tool`` claim is canonicalised like an ``X-Tool`` header (:meth:`Policy.canonical_tool`).

Half-open scopes: introspection is a gateway asking "may this call go through?", so it is
judged like ``/v1/authz`` and takes a probe slot like authz does. A token of a half-open scope
is active only when ``take_probe(scope)`` (the caller takes the slot with
:func:`breakers.state_machine.probe` and publishes the new state) says a slot was taken;
without ``take_probe`` it is active only while ``probes_remaining > 0`` (a read-only answer).
With 5 slots, 5 introspections answer active and the 6th inactive, however many tokens there
are. An active probe answer carries ``tripwire_probe: true``; a gateway must not cache it.

The token is never logged and never appears in an exception message or a response.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import jwt
from cryptography.hazmat.primitives import serialization

from .authz import decide
from .policy import Policy
from .scope import ScopeError, scopes_for
from .state_machine import BreakerState

MAX_TOKEN_BYTES = 8192
INACTIVE: dict[str, Any] = {"active": False}
_ALGS = ("HS256", "RS256")


@dataclass(frozen=True, slots=True)
class VerifyKey:
    kid: str
    alg: str
    key: Any  # bytes secret (HS256) or a public key object (RS256)


class KeyRing:
    """Verification keys by ``kid``.

    Config entries: ``{"kid", "alg": "HS256", "secret": str}`` or
    ``{"kid", "alg": "RS256", "public_key_pem": str}``.
    """

    def __init__(self, keys: Iterable[VerifyKey] = (), issuer: str | None = None,
                 audience: str | None = None, leeway_s: float = 0.0):
        self.keys = {k.kid: k for k in keys}
        self.issuer, self.audience, self.leeway_s = issuer, audience, leeway_s

    @classmethod
    def from_config(cls, entries: Iterable[Mapping[str, Any]], **kw: Any) -> "KeyRing":
        keys = []
        for i, e in enumerate(entries):
            kid, alg = e.get("kid"), e.get("alg")
            if not isinstance(kid, str) or not kid:
                raise ValueError(f"keys[{i}]: kid required")
            if alg == "HS256":
                secret = e.get("secret")
                if not isinstance(secret, (str, bytes)) or len(secret) < 32:
                    raise ValueError(f"keys[{i}]: HS256 secret of at least 32 bytes required")
                keys.append(VerifyKey(kid, alg, secret.encode() if isinstance(secret, str) else secret))
            elif alg == "RS256":
                pem = e.get("public_key_pem")
                if not isinstance(pem, (str, bytes)):
                    raise ValueError(f"keys[{i}]: public_key_pem required")
                pub = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
                keys.append(VerifyKey(kid, alg, pub))
            else:
                raise ValueError(f"keys[{i}]: alg must be one of {', '.join(_ALGS)}")
        return cls(keys, **kw)

    def verify(self, token: str, now: float) -> dict[str, Any] | None:
        """Verified claims, or None. Time checks use ``now`` (not the wall clock)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            return None
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if kid is None and len(self.keys) == 1:
                key = next(iter(self.keys.values()))
            else:
                key = self.keys.get(kid) if isinstance(kid, str) else None
            if key is None or header.get("alg") != key.alg:
                return None
            claims = jwt.decode(
                token, key.key, algorithms=[key.alg], audience=self.audience, issuer=self.issuer,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "verify_aud": self.audience is not None, "verify_iss": self.issuer is not None,
                         "require": ["sub", "jti", "iat", "exp"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        return claims if _claims_ok(claims, now, self.leeway_s) else None


def _claims_ok(c: Mapping[str, Any], now: float, leeway: float) -> bool:
    def num(k: str) -> bool:  # a finite number: NaN compares False with everything (never "expired")
        v = c.get(k)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (num("exp") and num("iat")) or ("nbf" in c and not num("nbf")):
        return False
    if not all(isinstance(c.get(k), str) and c.get(k) for k in ("sub", "jti", "tool")):
        return False
    if "tenant" in c and c["tenant"] is not None and not isinstance(c["tenant"], str):
        return False
    if c["exp"] <= now - leeway or c["iat"] > now + leeway or c.get("nbf", 0) > now + leeway:
        return False
    return True


def introspect(token: str, keys: KeyRing, states: Mapping[str, BreakerState], now: float,
               policy: Policy, known: bool = True,
               take_probe: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """RFC 7662 response for ``token`` (``{"active": false}`` or the active claims).

    ``scope`` in the answer is the breaker scope of the call (agent×tool, tenant-prefixed when
    the token has a tenant); ``tripwire_state`` is the deciding breaker state. ``take_probe``:
    see the module docstring (half-open scopes).
    """
    claims = keys.verify(token, now)
    if claims is None:
        return dict(INACTIVE)
    agent, raw_tool, tenant = claims["sub"], claims["tool"], claims.get("tenant") or None
    try:
        tool = policy.canonical_tool(raw_tool)
        scopes = scopes_for(agent, tool, tenant)
    except ScopeError:
        return dict(INACTIVE)
    decision = decide(states, agent, raw_tool, tenant, now, policy, known)  # canonicalises raw_tool itself
    if not decision.allow:
        return dict(INACTIVE)
    iat = float(claims["iat"])
    for scope in scopes:
        st = states.get(scope)
        if st is not None and st.last_revoked_at is not None and iat < st.last_revoked_at:
            return dict(INACTIVE)
    if decision.probe and decision.scope is not None and take_probe is not None and not take_probe(decision.scope):
        return dict(INACTIVE)  # the last slot went to another call meanwhile
    out: dict[str, Any] = {
        "active": True, "sub": agent, "tool": tool, "exp": claims["exp"], "iat": claims["iat"],
        "jti": claims["jti"], "scope": scopes[0], "token_type": "Bearer", "client_id": agent,
        "tripwire_state": decision.state,
    }
    if decision.probe:
        out["tripwire_probe"] = True
    if tenant:
        out["tenant"] = tenant
    for k in ("iss", "aud", "nbf"):
        if k in claims:
            out[k] = claims[k]
    return out


def issue_token(signing_key: Any, kid: str, alg: str, agent: str, tool: str, *, tenant: str | None = None,
                ttl_s: int = 900, now: float | None = None, jti: str | None = None,
                extra: Mapping[str, Any] | None = None) -> str:
    """Mint a tool token (for drills, the demo's synthetic agents and tests).

    ``signing_key``: HS256 secret or RS256 private key (object or PEM).
    """
    import uuid

    if alg not in _ALGS:
        raise ValueError(f"alg must be one of {', '.join(_ALGS)}")
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": agent, "tool": tool, "iat": iat, "exp": iat + int(ttl_s),
                              "jti": jti or uuid.uuid4().hex}
    if tenant:
        claims["tenant"] = tenant
    claims.update(extra or {})
    return jwt.encode(claims, signing_key, algorithm=alg, headers={"kid": kid})
