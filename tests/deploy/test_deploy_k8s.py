"""deploy/k8s/: plain manifests + kustomization. Core kinds are validated offline against the
Kubernetes OpenAPI schemas bundled in the PyPI package kubernetes-validate (strict: unknown fields
are errors); the Prometheus Operator CRDs against a minimal schema here, their rules with promtool."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.deploy import K8S_DIR, REPO, load_yaml, load_yaml_all, optional_binary, require_binary, require_module

# Oldest and newest Kubernetes minors the manifests are checked against.
K8S_VERSIONS = ("1.29", "1.37")
NOT_RESOURCES = {"kustomization.yaml", "secret.example.yaml"}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, K8S_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.fixture(scope="module")
def kustomization():
    return load_yaml(K8S_DIR / "kustomization.yaml")


@pytest.fixture(scope="module")
def docs(kustomization):
    """Every object kustomize would apply, plus the example Secret."""
    out = []
    for name in [*kustomization["resources"], "secret.example.yaml"]:
        for d in load_yaml_all(K8S_DIR / name):
            out.append((name, d))
    return out


def _by_kind(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def _one(docs, kind, name=None):
    found = [d for d in _by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


# --- kustomization ----------------------------------------------------------------------------

def test_kustomization_lists_every_manifest(kustomization):
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - NOT_RESOURCES
    assert set(listed) == on_disk
    assert kustomization["namespace"] == "tripwire"


def test_kubectl_kustomize_builds(kustomization):
    kubectl = optional_binary("kubectl", "the kustomize build check is optional (kubectl is not in the dev tools)")
    out = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(built) == sum(len(load_yaml_all(K8S_DIR / r)) for r in kustomization["resources"])
    for d in built:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "tripwire", d["metadata"]["name"]
    sts = next(d for d in built if d["kind"] == "StatefulSet")
    image = kustomization["images"][0]
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image['newName']}:{image['newTag']}"


# --- schema validation ------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_against_kubernetes_schemas(docs, version):
    kv = require_module("kubernetes_validate", "kubernetes-validate")
    checked = 0
    for name, d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name}: {d['kind']}/{d['metadata']['name']} invalid for Kubernetes {version}: "
                        f"{exc.message} at {'/'.join(map(str, exc.absolute_path))}")
        checked += 1
    assert checked >= 9


def test_the_validator_rejects_mistakes(docs):
    """Guard against a validator that passes anything: a typo'd field and a wrong type fail."""
    kv = require_module("kubernetes_validate", "kubernetes-validate")
    sts = _one(docs, "StatefulSet")
    typo = copy.deepcopy(sts)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(typo, K8S_VERSIONS[-1], strict=True)
    wrong = copy.deepcopy(sts)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong, K8S_VERSIONS[-1], strict=True)


_METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
# Minimal subsets of the Prometheus Operator CRD schemas (monitoring.coreos.com/v1): the fields used
# here, with the operator's types; additionalProperties false catches typos.
SERVICEMONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object"},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": _DURATION, "scrapeTimeout": _DURATION,
                        "relabelings": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"sourceLabels": {"type": "array", "items": {"type": "string"}},
                                           "targetLabel": {"type": "string"}, "regex": {"type": "string"},
                                           "replacement": {"type": "string"},
                                           "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop",
                                                               "labelkeep", "hashmod", "lowercase", "uppercase"]}}}},
                    }}},
            }},
    },
}
_RULE = {
    "type": "object", "required": ["expr"], "additionalProperties": False,
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                   "expr": {"type": ["string", "integer"]}, "for": _DURATION, "keep_firing_for": _DURATION,
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
}
PROMETHEUSRULE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                               "limit": {"type": "integer"}, "rules": {"type": "array", "items": _RULE}}}}}},
    },
}


def test_crd_objects_match_the_operator_schema(docs):
    jsonschema = require_module("jsonschema", "jsonschema")
    for schema, kind in ((SERVICEMONITOR_SCHEMA, "ServiceMonitor"), (PROMETHEUSRULE_SCHEMA, "PrometheusRule")):
        objs = _by_kind(docs, kind)
        assert objs, kind
        for d in objs:
            jsonschema.validate(d, schema)
    bad = copy.deepcopy(_one(docs, "ServiceMonitor"))
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SERVICEMONITOR_SCHEMA)


# --- generated files in sync ------------------------------------------------------------------

def test_prometheusrule_is_in_sync_with_the_rule_files():
    mod = _module("build_prometheusrule")
    assert (K8S_DIR / "prometheusrule.yaml").read_text() == mod.render(), \
        "run: python deploy/k8s/build_prometheusrule.py"
    objs = load_yaml_all(K8S_DIR / "prometheusrule.yaml")
    rule_files = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
    assert len(objs) == len(rule_files)
    for obj, path in zip(objs, rule_files):
        assert obj["spec"]["groups"] == load_yaml(path)["groups"], path.name
        names = [g["name"] for g in obj["spec"]["groups"]]
        assert len(names) == len(set(names)), f"{obj['metadata']['name']}: repeated group name"


def test_promtool_accepts_each_prometheusrule(tmp_path):
    promtool = require_binary("promtool", "Debian package prometheus")
    files = []
    for obj in load_yaml_all(K8S_DIR / "prometheusrule.yaml"):
        f = tmp_path / f"{obj['metadata']['name']}.yml"
        f.write_text(yaml.safe_dump(obj["spec"], sort_keys=False))
        files.append(str(f))
    out = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_policy_configmap_is_in_sync_with_the_default_policy():
    mod = _module("build_policy_configmap")
    assert (K8S_DIR / "configmap-policy.yaml").read_text() == mod.render(), \
        "run: python deploy/k8s/build_policy_configmap.py"
    cm = load_yaml(K8S_DIR / "configmap-policy.yaml")
    text = (REPO / "deploy" / "policy" / "default.yaml").read_text()
    assert cm["data"]["policy.yaml"] == text


def test_policy_in_the_configmap_passes_policy_check():
    from breakers.policy import check_policy_text

    cm = load_yaml(K8S_DIR / "configmap-policy.yaml")
    assert check_policy_text(cm["data"]["policy.yaml"], "configmap-policy.yaml") == []


# --- how the pieces fit -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sts(docs):
    return _one(docs, "StatefulSet", "tripwire")


def _container(sts):
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c


def _args(c):
    a = c["args"]
    assert a[0] == "worker"
    return dict(zip(a[1::2], a[2::2])), a


def test_statefulset_state_volume_and_policy_mount(sts, docs):
    c = _container(sts)
    args, argv = _args(c)
    assert "--no-create-topics" in argv, "production topics are created by the Kafka admins"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[args["--data-dir"]]["name"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    policy = Path(args["--policy"])
    pm = mounts[str(policy.parent)]
    assert pm.get("readOnly") and "subPath" not in pm, "directory mount, so ConfigMap updates reach the pod"
    vol = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == pm["name"])
    cm = _one(docs, "ConfigMap", vol["configMap"]["name"])
    (item,) = vol["configMap"]["items"]
    assert item["path"] == policy.name and item["key"] in cm["data"]
    assert args["--web-host"] == "0.0.0.0"


def test_statefulset_probes_resources_security(sts):
    spec = sts["spec"]["template"]["spec"]
    c = _container(sts)
    args, _ = _args(c)
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names["http"] == int(args["--web-port"]) == 6066
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in port_names
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    # the uid is the image's USER
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"USER {spec['securityContext']['runAsUser']}:" in dockerfile
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, "read-only root fs needs a writable /tmp"
    assert spec["enableServiceLinks"] is False, "a Service named tripwire would inject TRIPWIRE_* variables"
    assert spec["automountServiceAccountToken"] is False


def test_statefulset_env_sources_exist(sts, docs, monkeypatch):
    c = _container(sts)
    env_cm = next(e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e)
    data = _one(docs, "ConfigMap", env_cm)["data"]
    from streams.settings import Settings
    for key in data:
        assert key.startswith("TRIPWIRE_") and key.removeprefix("TRIPWIRE_").lower() in Settings.model_fields, key
    secret_ref = next(e["secretRef"] for e in c["envFrom"] if "secretRef" in e)
    assert secret_ref.get("optional") is True
    secret = _one(docs, "Secret", secret_ref["name"])
    # the ConfigMap plus the example Secret make valid settings (names and value shapes)
    monkeypatch.delenv("TRIPWIRE_CONFIG", raising=False)
    for key, value in {**data, **secret["stringData"]}.items():
        assert key.removeprefix("TRIPWIRE_").lower().split("__")[0] in Settings.model_fields, key
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.broker == data["TRIPWIRE_BROKER"] and s.partitions == int(data["TRIPWIRE_PARTITIONS"])
    assert "k1" in s.signing_keys and s.operators and s.jwt_keys


def test_services_pdb_and_servicemonitor_select_the_workers(sts, docs):
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]

    def selects(selector):
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(sts["spec"]["selector"]["matchLabels"])
    headless = _one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    api = _one(docs, "Service", "tripwire")
    assert api["spec"].get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in api["spec"]
    for svc in (headless, api):
        assert selects(svc["spec"]["selector"])
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    pdb = _one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    sm = _one(docs, "ServiceMonitor")
    matched = [s for s in _by_kind(docs, "Service")
               if all(s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    assert matched == [api], "exactly one Service scraped, or every worker is scraped twice"
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in api["spec"]["ports"]}
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    # job="tripwire" is what the alert rules and dashboards query
    assert api["metadata"]["labels"][sm["spec"]["jobLabel"]] == "tripwire"


def test_image_name_matches_kustomize_images(sts, kustomization):
    image = _container(sts)["image"]
    assert image.split(":")[0] == kustomization["images"][0]["name"]
