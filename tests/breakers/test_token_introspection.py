from __future__ import annotations

import logging

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from breakers.introspect import KeyRing, introspect, issue_token
from breakers.policy import parse_policy
from breakers.state_machine import BreakerState

from helpers.breakers import T0

SECRET = "s" * 40
POLICY = parse_policy("consequential_tools: ['shell']\n")


@pytest.fixture(scope="module")
def rsa_keys():
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return priv, pem, other


@pytest.fixture(scope="module")
def ring(rsa_keys):
    return KeyRing.from_config([{"kid": "hs1", "alg": "HS256", "secret": SECRET},
                                {"kid": "rs1", "alg": "RS256", "public_key_pem": rsa_keys[1]}])


def hs(agent="a", tool="ls", **kw):
    return issue_token(SECRET, "hs1", "HS256", agent, tool, now=kw.pop("now", T0), **kw)


def test_hs256_active(ring):
    r = introspect(hs(jti="j1", tenant="acme"), ring, {}, T0 + 1, POLICY)
    assert r["active"] is True
    assert (r["sub"], r["tool"], r["jti"], r["iat"], r["exp"], r["token_type"], r["tenant"]) == (
        "a", "ls", "j1", int(T0), int(T0) + 900, "Bearer", "acme")
    assert r["scope"] == "tenant:acme/agent:a/tool:ls" and r["tripwire_state"] == "closed"


def test_rs256_active_and_wrong_key(ring, rsa_keys):
    priv, _, other = rsa_keys
    ok = issue_token(priv, "rs1", "RS256", "a", "ls", now=T0)
    assert introspect(ok, ring, {}, T0, POLICY)["active"] is True
    bad = issue_token(other, "rs1", "RS256", "a", "ls", now=T0)
    assert introspect(bad, ring, {}, T0, POLICY) == {"active": False}


@pytest.mark.parametrize("make", [
    lambda: hs(ttl_s=10, now=T0 - 20),  # expired
    lambda: hs(now=T0 + 3600),  # issued in the future
    lambda: issue_token("x" * 40, "hs1", "HS256", "a", "ls", now=T0),  # wrong secret
    lambda: issue_token(SECRET, "nope", "HS256", "a", "ls", now=T0),  # unknown kid
    lambda: jwt.encode({"sub": "a", "tool": "ls", "iat": int(T0), "exp": int(T0) + 60, "jti": "j"}, None,
                       algorithm="none", headers={"kid": "hs1"}),  # alg none
    lambda: jwt.encode({"sub": "a", "iat": int(T0), "exp": int(T0) + 60, "jti": "j"}, SECRET,
                       algorithm="HS256", headers={"kid": "hs1"}),  # no tool claim
    lambda: jwt.encode({"sub": "a", "tool": "ls", "iat": int(T0), "exp": int(T0) + 60}, SECRET,
                       algorithm="HS256", headers={"kid": "hs1"}),  # no jti
    lambda: jwt.encode({"sub": "a", "tool": "ls", "iat": "yesterday", "exp": int(T0) + 60, "jti": "j"}, SECRET,
                       algorithm="HS256", headers={"kid": "hs1"}),  # bad iat
    lambda: jwt.encode({"sub": "", "tool": "ls", "iat": int(T0), "exp": int(T0) + 60, "jti": "j"}, SECRET,
                       algorithm="HS256", headers={"kid": "hs1"}),  # empty sub
    lambda: hs(agent="a\x00b"),  # invalid agent id
    lambda: "not.a.jwt",
    lambda: "",
    lambda: "x" * 100_000,
])
def test_invalid_tokens_inactive(ring, make):
    assert introspect(make(), ring, {}, T0, POLICY) == {"active": False}


def test_alg_confusion_rs_key_as_hmac_secret(ring, rsa_keys):
    # sign HS256 with the RS public key PEM bytes, claiming the RS kid: must be refused
    import hmac, hashlib, base64, json  # noqa: E401

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "kid": "rs1", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "a", "tool": "ls", "iat": int(T0), "exp": int(T0) + 60, "jti": "j"}).encode())
    sig = b64(hmac.new(rsa_keys[1].encode(), head + b"." + body, hashlib.sha256).digest())
    assert introspect((head + b"." + body + b"." + sig).decode(), ring, {}, T0, POLICY) == {"active": False}


def test_denied_scope_makes_token_inactive(ring):
    tok = hs(tool="shell")
    states = {"agent:a": BreakerState("agent:a", "escalated")}
    assert introspect(tok, ring, states, T0, POLICY) == {"active": False}
    assert introspect(hs(tool="ls"), ring, states, T0, POLICY)["active"] is True
    states = {"agent:a/tool:ls": BreakerState("agent:a/tool:ls", "open", last_revoked_at=T0 - 100)}
    assert introspect(hs(tool="ls"), ring, states, T0, POLICY) == {"active": False}


def test_revoked_after_issue(ring):
    tok = hs(now=T0)
    # scope was opened after the token was issued, then reset to closed: the old token stays revoked
    states = {"agent:a": BreakerState("agent:a", "closed", last_revoked_at=T0 + 5)}
    assert introspect(tok, ring, states, T0 + 10, POLICY) == {"active": False}
    fresh = hs(now=T0 + 6)
    assert introspect(fresh, ring, states, T0 + 10, POLICY)["active"] is True
    same_second = hs(now=T0 + 5)  # iat == floor(revocation time) with revocation at .5 → revoked
    states = {"agent:a": BreakerState("agent:a", "closed", last_revoked_at=T0 + 5.5)}
    assert introspect(same_second, ring, states, T0 + 10, POLICY) == {"active": False}


def test_unknown_state_fail_mode(ring):
    assert introspect(hs(), ring, {}, T0, POLICY, known=False) == {"active": False}
    assert introspect(hs(), ring, {}, T0, parse_policy("fail_mode: open"), known=False)["active"] is True


def test_issuer_audience_checked(rsa_keys):
    ring = KeyRing.from_config([{"kid": "hs1", "alg": "HS256", "secret": SECRET}], issuer="tw", audience="gw")
    good = hs(extra={"iss": "tw", "aud": "gw"})
    assert introspect(good, ring, {}, T0, POLICY)["aud"] == "gw"
    assert introspect(hs(extra={"iss": "evil", "aud": "gw"}), ring, {}, T0, POLICY) == {"active": False}
    assert introspect(hs(), ring, {}, T0, POLICY) == {"active": False}


@pytest.mark.parametrize("entry", [{"kid": "k", "alg": "HS256", "secret": "short"},
                                   {"kid": "k", "alg": "none"}, {"alg": "HS256", "secret": SECRET},
                                   {"kid": "k", "alg": "RS256"}])
def test_bad_key_config(entry):
    with pytest.raises(ValueError):
        KeyRing.from_config([entry])


def test_token_never_logged(ring, caplog):
    caplog.set_level(logging.DEBUG)
    tok = issue_token("x" * 40, "hs1", "HS256", "a", "ls", now=T0)
    introspect(tok, ring, {}, T0, POLICY)
    introspect(hs(), ring, {}, T0, POLICY)
    assert tok not in caplog.text and tok.split(".")[2] not in caplog.text


@pytest.mark.parametrize("claim", ["exp", "iat"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_times_make_a_token_inactive(ring, claim, value):
    """``exp: NaN`` compares False with every time: without the check it was active forever."""
    assert introspect(hs(extra={claim: value}), ring, {}, T0 + 1, POLICY) == {"active": False}
