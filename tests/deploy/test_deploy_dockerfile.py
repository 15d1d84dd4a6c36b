"""The worker image: ./Dockerfile and ./.dockerignore (no Docker engine here: static checks with
the official Dockerfile parser, plus the HEALTHCHECK command run for real against a local server)."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib

import pytest

from helpers.deploy import REPO, require_module

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@pytest.fixture(scope="module")
def commands():
    dockerfile = require_module("dockerfile", "dockerfile")
    return dockerfile.parse_file(str(DOCKERFILE))


def _stages(commands):
    """[(base image with ARG defaults substituted, stage name, [commands])]."""
    args: dict[str, str] = {}
    stages: list[tuple[str, str | None, list]] = []
    for c in commands:
        if c.cmd == "ARG" and not stages:
            name, _, default = c.value[0].partition("=")
            args[name] = default
        elif c.cmd == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
            name = c.value[2] if len(c.value) >= 3 and c.value[1].upper() == "AS" else None
            stages.append((image, name, []))
        elif stages:
            stages[-1][2].append(c)
    return stages


def _final(commands):
    return _stages(commands)[-1][2]


def _one(cmds, name):
    found = [c for c in cmds if c.cmd == name]
    assert len(found) == 1, f"expected one {name} in the runtime stage, found {len(found)}"
    return found[0]


def test_multi_stage_on_python_311_slim(commands):
    stages = _stages(commands)
    assert len(stages) >= 2, "builder + runtime stages"
    assert [s[0] for s in stages] == ["python:3.11-slim"] * len(stages)
    assert stages[0][1] == "builder"
    runtime = stages[-1][2]
    copies_from = [c for c in runtime if c.cmd == "COPY" and any(f.startswith("--from=builder") for f in c.flags)]
    assert copies_from, "the runtime stage copies the built venv from the builder"
    # the project is pip-installed (not editable) in the builder
    builder_runs = " ".join(c.value[0] for c in stages[0][2] if c.cmd == "RUN")
    # the project with the worker extra (the CLI and the service; + RocksDB store), not the embedded broker
    assert re.search(r"pip install \"\.\[worker(,rocksdb)?\]\"(\s|$)", builder_runs)
    assert "-e ." not in builder_runs


def test_runs_as_numeric_non_root_user(commands):
    user = _one(_final(commands), "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root uid (runAsNonRoot), got {user}"


def test_entrypoint_cmd_expose(commands):
    runtime = _final(commands)
    ep, cmd = _one(runtime, "ENTRYPOINT"), _one(runtime, "CMD")
    assert ep.json and list(ep.value) == ["tripwire"]
    assert cmd.json and list(cmd.value) == ["worker"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "tripwire" in scripts
    assert "6066" in [p.split("/")[0] for p in _one(runtime, "EXPOSE").value]


def test_env_names_are_settings_fields(commands):
    """TRIPWIRE_* variables baked into the image must be real settings, or they do nothing."""
    from streams.settings import Settings

    env = {}
    for c in _final(commands):
        if c.cmd == "ENV":
            vals = list(c.value)
            env.update(dict(zip(vals[::2], vals[1::2])))
    tripwire = {k: v for k, v in env.items() if k.startswith("TRIPWIRE_")}
    assert tripwire, "the image sets its web host/port, data dir and policy path"
    for key in tripwire:
        assert key.removeprefix("TRIPWIRE_").lower() in Settings.model_fields, key
    assert tripwire["TRIPWIRE_WEB_HOST"] == "0.0.0.0"
    assert tripwire["TRIPWIRE_WEB_PORT"] == "6066"
    assert "/opt/venv/bin" in env["PATH"]


def _healthcheck_argv(commands) -> list[str]:
    hc = _one(_final(commands), "HEALTHCHECK")
    assert hc.json and hc.value[0] == "CMD", "exec form: no shell needed"
    argv = list(hc.value[1:])
    assert argv[:2] == ["python", "-c"], "python -c with urllib, the slim image has no curl"
    assert "/healthz" in argv[2] and "urllib" in argv[2]
    assert "curl" not in " ".join(argv) and "wget" not in " ".join(argv)
    return [sys.executable, *argv[1:]]


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        code = self.server.status if self.path == "/healthz" else 404  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_healthcheck_command_against_a_local_server(commands, status, healthy):
    argv = _healthcheck_argv(commands)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "TRIPWIRE_WEB_PORT": str(server.server_address[1])}
        rc = subprocess.run(argv, env=env, capture_output=True, timeout=15).returncode
    finally:
        server.shutdown()
        server.server_close()
    assert (rc == 0) is healthy


def test_healthcheck_fails_when_nothing_listens(commands):
    argv = _healthcheck_argv(commands)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port is closed again: connection refused
    env = {**os.environ, "TRIPWIRE_WEB_PORT": str(port)}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=15).returncode != 0


# --- build context -------------------------------------------------------------------------

def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex), in order; Docker's rules: last match wins, and a pattern
    matching a parent folder matches everything in it."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip("/"))
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((neg, re.compile(rx + r"\Z")))
    return rules


def _in_context(rel: str, rules) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not neg
    return not excluded


def test_copy_sources_exist_and_are_in_the_build_context(commands):
    rules = _ignore_rules()
    copies = [c for c in commands if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)]
    assert copies
    for c in copies:
        sources = list(c.value[:-1])
        matched_any = False
        for src in sources:
            hits = sorted(REPO.glob(src.rstrip("/"))) if any(ch in src for ch in "*?[") else [REPO / src.rstrip("/")]
            hits = [h for h in hits if h.exists()]
            if not any(ch in src for ch in "*?["):
                assert hits, f"{c.original}: {src} does not exist"
            for hit in hits:
                files = [hit] if hit.is_file() else [p for p in hit.rglob("*.py") if "__pycache__" not in p.parts]
                assert files, f"{c.original}: {src} is empty"
                for f in files:
                    rel = f.relative_to(REPO).as_posix()
                    assert _in_context(rel, rules), f"{rel} is COPYed but excluded by .dockerignore"
                    matched_any = True
        assert matched_any, c.original


def test_every_project_package_is_copied(commands):
    includes = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {c.value[0].rstrip("/") for c in commands if c.cmd == "COPY" and not c.flags}
    for pattern in includes:
        assert pattern.rstrip("*") in copied, f"package {pattern} is not copied into the builder"


def test_build_context_leaves_out_local_state():
    rules = _ignore_rules()
    for rel in (".git/config", ".venv/bin/python", "tests/deploy/test_deploy_dockerfile.py",
                ".tripwire/worker-6066/x", "streams/__pycache__/app.cpython-311.pyc", "bench/run.py",
                "deploy/alertmanager/secrets/pagerduty_routing_key"):
        assert not _in_context(rel, rules), rel
    for rel in ("pyproject.toml", "streams/settings.py", "breakers/policy.py", "detectors/rates.py",
                "deploy/policy/default.yaml"):
        assert _in_context(rel, rules), rel
