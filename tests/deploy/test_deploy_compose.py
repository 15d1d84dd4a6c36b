"""deploy/compose/: the compose stack. `docker compose config` (Compose v2 CLI, no engine needed)
plus static checks that what it mounts exists and agrees with the shipped configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.deploy import (COMPOSE_DIR, COMPOSE_FILE, REPO, check_exists, compose_command, load_yaml,
                            require_binary)

WORKERS = ("tripwire-1", "tripwire-2")
EXPECTED_SERVICES = {"kafka", "kafka-init", *WORKERS, "prometheus", "alertmanager", "grafana", "gateway"}


@pytest.fixture(scope="module")
def raw():
    return load_yaml(COMPOSE_FILE)


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that the compose file interpolates."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TRIPWIRE_", "GRAFANA_", "COMPOSE_", "DOCKER_"))}


@pytest.fixture(scope="module")
def resolved():
    """`docker compose config --format json`: the fully resolved model (merge keys, paths,
    interpolation), exactly as the engine would get it."""
    argv = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--format", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=REPO)
    assert out.returncode == 0, f"{' '.join(argv)} failed:\n{out.stderr}"
    return json.loads(out.stdout)


# --- with the Compose CLI ------------------------------------------------------------------

def test_compose_config_is_valid(resolved):
    assert resolved["name"] == "tripwire"
    assert set(resolved["services"]) == EXPECTED_SERVICES


def test_the_compose_cli_reports_errors(tmp_path):
    """Guard: the CLI in use exits non-zero on an invalid file (a wrapper that swallowed the exit
    code would make every check here pass)."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: busybox\n    no_such_key: 1\n")
    out = subprocess.run([*compose_command(), "-f", str(bad), "config", "--quiet"], capture_output=True,
                         text=True, timeout=60, env=_clean_env())
    assert out.returncode != 0
    assert "no_such_key" in out.stderr


def test_compose_config_quiet_in_strict_mode():
    """`config --quiet` (what an operator runs) succeeds and prints no warnings."""
    argv = [*compose_command(), "-f", str(COMPOSE_FILE), "config", "--quiet"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "warn" not in out.stderr.lower(), out.stderr


def _bind_sources(resolved):
    for name, svc in resolved["services"].items():
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":
                yield name, Path(vol["source"]), vol["target"], vol.get("read_only", False)


def test_every_bind_mount_exists_in_the_repo(resolved):
    binds = list(_bind_sources(resolved))
    assert len(binds) >= 9
    pending = []
    for service, source, target, read_only in binds:
        assert source.is_relative_to(REPO), f"{service}: {source} is outside the repository"
        assert read_only, f"{service}: config mount {target} should be read-only"
        try:
            check_exists(source)
        except pytest.xfail.Exception:
            pending.append(source)
    if pending:
        pytest.xfail(f"pending files: {[str(p.relative_to(REPO)) for p in pending]}")


def test_named_volumes_are_declared(resolved):
    declared = set(resolved.get("volumes", {}))
    for svc in resolved["services"].values():
        for vol in svc.get("volumes", []):
            if vol["type"] == "volume":
                assert vol["source"] in declared


def test_workers_build_from_the_repo_dockerfile(resolved):
    for w in WORKERS:
        build = resolved["services"][w]["build"]
        assert Path(build["context"]) == REPO
        assert (Path(build["context"]) / build["dockerfile"]).is_file()


def test_workers_one_group_two_hosts_two_ports(resolved):
    services = resolved["services"]
    hosts = {services[w]["hostname"] for w in WORKERS}
    assert hosts == set(WORKERS)
    groups = {services[w]["environment"]["TRIPWIRE_APP_ID"] for w in WORKERS}
    assert len(groups) == 1, "both workers in the same consumer group"
    published = {}
    for w in WORKERS:
        for p in services[w]["ports"]:
            published[(w, p["target"])] = int(p["published"])
        cmd = services[w]["command"]
        assert cmd[0] == "worker"
        args = dict(zip(cmd[1::2], cmd[2::2]))
        assert args["--broker"] == "kafka://kafka:9092"
        assert args["--web-host"] == "0.0.0.0" and args["--web-port"] == "6066"
        assert "--no-create-topics" in cmd
        assert services[w]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert services[w]["read_only"] is True
        # --data-dir is a volume, --policy is inside a mounted folder
        targets = {v["target"]: v for v in services[w]["volumes"]}
        assert targets[args["--data-dir"]]["type"] == "volume"
        policy = Path(args["--policy"])
        mount = targets[str(policy.parent)]
        assert (Path(mount["source"]) / policy.name).is_file()
    assert published[("tripwire-1", 6066)] == 6066
    assert published[("tripwire-2", 6066)] == 6067


def test_gateway_reaches_a_worker(resolved):
    gw = resolved["services"]["gateway"]
    assert gw["network_mode"] == "service:tripwire-1"
    targets = {v["target"] for v in gw["volumes"]}
    assert "/etc/nginx/conf.d/default.conf" in targets


# --- static, no CLI ------------------------------------------------------------------------

def _binds_from_raw(raw):
    for name, svc in raw["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
            if src and src.startswith((".", "/")):
                yield name, (COMPOSE_DIR / src).resolve()


def test_mount_sources_exist_without_the_cli(raw):
    """The same check as above from the YAML alone, so it runs without Docker Compose too."""
    binds = list(_binds_from_raw(raw))
    assert len(binds) >= 9
    missing = [p for _, p in binds if not p.exists()]
    for path in missing:
        check_exists(path)  # fails with the missing path


def test_kafka_is_kraft_with_matching_listener(raw):
    env = raw["services"]["kafka"]["environment"]
    assert raw["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "zookeeper" not in json.dumps(raw).lower()


def test_topic_script_matches_settings():
    from streams.settings import Settings, Topics

    script = (COMPOSE_DIR / "kafka" / "create-topics.sh").read_text()
    for topic in Topics().model_dump().values():
        assert f"create {topic}" in script, topic
    assert "create breaker-state --config cleanup.policy=compact" in script
    assert "--if-not-exists" in script
    assert str(Settings.model_fields["partitions"].default) in script  # PARTITIONS default
    bash = shutil.which("bash")
    if bash:
        assert subprocess.run([bash, "-n", str(COMPOSE_DIR / "kafka" / "create-topics.sh")]).returncode == 0


def test_prometheus_config_follows_the_shipped_one(raw):
    shipped = load_yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    ours = load_yaml(COMPOSE_DIR / "prometheus.yml")
    assert ours["global"] == shipped["global"]
    assert ours["rule_files"] == shipped["rule_files"]
    jobs = {j["job_name"]: j for j in ours["scrape_configs"]}
    shipped_jobs = {j["job_name"]: j for j in shipped["scrape_configs"]}
    assert set(jobs) == set(shipped_jobs)
    tw, stw = dict(jobs["tripwire"]), dict(shipped_jobs["tripwire"])
    targets = tw.pop("static_configs")[0]["targets"]
    stw.pop("static_configs")
    assert tw == stw
    assert sorted(targets) == [f"{w}:6066" for w in WORKERS]
    am = ours["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]
    # the rule files resolve through the compose mount of deploy/prometheus/rules
    mounts = dict(v.split(":")[1::-1] for v in raw["services"]["prometheus"]["volumes"] if v.startswith("."))
    rules_src = (COMPOSE_DIR / mounts["/etc/prometheus/rules"]).resolve()
    for rf in ours["rule_files"]:
        assert (rules_src / Path(rf).name).is_file()
        assert Path("/etc/prometheus", rf).parent == Path("/etc/prometheus/rules")


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    promtool = require_binary("promtool", "Debian package prometheus")
    (tmp_path / "prometheus.yml").write_text((COMPOSE_DIR / "prometheus.yml").read_text())
    (tmp_path / "rules").symlink_to(REPO / "deploy" / "prometheus" / "rules")
    out = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_datasource_differs_only_by_url():
    shipped = load_yaml(REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    ours = load_yaml(COMPOSE_DIR / "grafana" / "datasources" / "prometheus.yml")
    (s,), (o,) = shipped["datasources"], ours["datasources"]
    assert o.pop("url") == "http://prometheus:9090"
    s.pop("url")
    assert o == s and ours["apiVersion"] == shipped["apiVersion"]


def test_grafana_dashboards_land_where_provisioning_looks(raw):
    provider = load_yaml(REPO / "grafana" / "provisioning" / "dashboards" / "tripwire.yml")["providers"][0]
    vols = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve() for v in raw["services"]["grafana"]["volumes"]
            if v.startswith(".")}
    assert vols[provider["options"]["path"]] == REPO / "grafana" / "dashboards"
    assert vols["/etc/grafana/provisioning/dashboards"] == REPO / "grafana" / "provisioning" / "dashboards"
    assert list((REPO / "grafana" / "dashboards").glob("*.json"))


def test_alertmanager_secrets_mounted_where_the_config_reads_them(raw):
    text = (REPO / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
    vols = {v.split(":")[1]: (COMPOSE_DIR / v.split(":")[0]).resolve() for v in raw["services"]["alertmanager"]["volumes"]
            if v.startswith(".")}
    secrets_dir = vols["/etc/alertmanager/secrets"]
    import re
    paths = set(re.findall(r"_file:\s*(/etc/alertmanager/secrets/\S+)", text))
    assert paths
    for p in paths:
        assert (secrets_dir / Path(p).name).is_file(), p


def test_worker_environment_is_valid_settings(resolved, monkeypatch):
    """Every TRIPWIRE_* variable the workers get is a settings field and parses."""
    from streams.settings import Settings

    monkeypatch.delenv("TRIPWIRE_CONFIG", raising=False)
    for w in WORKERS:
        env = resolved["services"][w]["environment"]
        for key, value in env.items():
            assert key.startswith("TRIPWIRE_") and key.removeprefix("TRIPWIRE_").lower() in Settings.model_fields, key
            monkeypatch.setenv(key, value)
        s = Settings()
        assert s.app_id == "tripwire" and s.alertmanager_url == "http://alertmanager:9093"
