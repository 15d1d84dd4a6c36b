from __future__ import annotations

import pytest

from breakers.operators import (
    PERMISSIONS, OperatorRegistry, Role, approval_ttl, can, generate_token, hash_token, validate_reason,
)

TOKENS = {"vic": generate_token(), "oli": generate_token(), "ada": generate_token()}


@pytest.fixture(scope="module")
def reg():
    return OperatorRegistry.from_config([
        {"name": "vic", "role": "viewer", "token_sha256": hash_token(TOKENS["vic"])},
        {"name": "oli", "role": "operator", "token_sha256": hash_token(TOKENS["oli"])},
        {"name": "ada", "role": "admin", "token_sha256": hash_token(TOKENS["ada"]).upper()},
    ])


def test_authenticate(reg):
    for name, tok in TOKENS.items():
        op = reg.authenticate(f"Bearer {tok}")
        assert op is not None and op.name == name
    assert reg.authenticate(f"bearer   {TOKENS['oli']}  ").name == "oli"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", f"Token {TOKENS['ada']}",
                                    "Bearer wrong", "Bearer " + "x" * 10_000, f"Bearer {TOKENS['ada']}x",
                                    "Bearer \udcff"])
def test_no_or_wrong_token(reg, header):
    assert reg.authenticate(header) is None


@pytest.mark.parametrize("name,action,allowed", [
    ("vic", "list", True), ("vic", "show", True), ("vic", "force_open", False), ("vic", "reset", False),
    ("vic", "approve", False), ("vic", "policy_reload", False),
    ("oli", "show", True), ("oli", "force_open", True), ("oli", "reset", True), ("oli", "approve", True),
    ("oli", "policy_reload", False),
    ("ada", "policy_reload", True), ("ada", "force_open", True), ("ada", "something_new", True),
    ("oli", "something_new", False),
])
def test_permissions(reg, name, action, allowed):
    op = reg.authenticate(f"Bearer {TOKENS[name]}")
    assert can(op, action) is allowed


def test_no_operator_can_nothing():
    assert not any(can(None, a) for a in PERMISSIONS)
    assert Role.viewer < Role.operator < Role.admin


@pytest.mark.parametrize("entry", [
    {"name": "x", "role": "root", "token_sha256": "0" * 64},
    {"name": "x", "role": "admin", "token_sha256": "plaintext-token"},
    {"name": "", "role": "admin", "token_sha256": "0" * 64},
    {"role": "admin", "token_sha256": "0" * 64},
])
def test_bad_config(entry):
    with pytest.raises(ValueError):
        OperatorRegistry.from_config([entry])


def test_reason_validation():
    assert validate_reason("  looks bad\nsee ticket 4  ") == "looks bad\nsee ticket 4"
    for bad in (None, "", "   ", "x" * 501, "bell\x07"):
        with pytest.raises(ValueError):
            validate_reason(bad)


def test_approval_ttl():
    assert approval_ttl(None) == 3600
    assert approval_ttl(None, default_s=7200, max_s=3600) == 3600
    assert approval_ttl("900") == 900
    for bad in (0, -5, "soon", float("nan"), 9 * 3600):
        with pytest.raises(ValueError):
            approval_ttl(bad)


def test_hash_token_is_sha256_hex():
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(generate_token()) >= 43
