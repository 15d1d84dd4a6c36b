"""Fixtures for breakers tests: the shipped default policy and a small state-machine policy."""
from __future__ import annotations

import pytest

from breakers.policy import Policy, load_policy, parse_policy
from helpers.breakers import DEFAULT_POLICY, SM_POLICY


@pytest.fixture(scope="session")
def default_policy() -> Policy:
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def sm_policy() -> Policy:
    return parse_policy(SM_POLICY, "sm.yaml")
