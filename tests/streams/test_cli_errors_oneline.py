"""Every configuration, policy and environment mistake is ONE line with its place and the fix, exit 2,
no traceback (issue #17, streams.cli.errors). Each case runs the real ``tripwire`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BAD_POLICY = "budgets:\n  - name: x\n    signal: near_miss_rate\n    objective: -1\n    action: open\n    scopes: ['agent:*']\n"


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TRIPWIRE_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=REPO, env=clean, capture_output=True,
                          text=True, timeout=120)


def one_line_exit_2(r: subprocess.CompletedProcess[str]) -> str:
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2, out
    assert "Traceback" not in out, out
    assert len(out.splitlines()) == 1, out
    return out


def test_bad_policy_validation(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD_POLICY)
    out = one_line_exit_2(run(tmp_path, "worker", "--policy", str(f), "--broker", "kafka://127.0.0.1:1"))
    # the objective is on line 4, column 16 of the file: counted independently here
    line = BAD_POLICY.splitlines().index("    objective: -1") + 1
    col = "    objective: -1".index("-1") + 1
    assert out.startswith(f"Error: {f}:{line}:{col}: budgets[0].objective: "), out
    assert out.endswith(f"fix the policy (from --policy); `tripwire policy check {f}` lists every problem"), out


def test_bad_policy_yaml_syntax(tmp_path: Path) -> None:
    f = tmp_path / "syntax.yaml"
    f.write_text("budgets:\n  - name: x\n    scopes: [agent:*\n")
    out = one_line_exit_2(run(tmp_path, "worker", "--policy", str(f), "--broker", "kafka://127.0.0.1:1"))
    assert out.startswith(f"Error: {f}:4:1: <root>: YAML syntax error: "), out
    assert "fix the policy (from --policy)" in out


def test_bad_policy_in_backtest_and_up(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD_POLICY)
    traces = tmp_path / "t.jsonl"
    traces.write_text("")
    out = one_line_exit_2(run(tmp_path, "backtest", "--policy", str(f), "--traces", str(traces)))
    assert f"{f}:4:16: budgets[0].objective" in out
    out = one_line_exit_2(run(tmp_path, "up", "--no-traffic", "--data-dir", str(tmp_path / "d"),
                              env={"TRIPWIRE_POLICY_FILE": str(f)}))
    assert f"{f}:4:16: budgets[0].objective" in out and "(from TRIPWIRE_POLICY_FILE)" in out
    assert "tripwire is up" not in out and not (tmp_path / "d").exists()  # refused before anything started


def test_missing_policy_file_from_the_environment(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    out = one_line_exit_2(run(tmp_path, "worker", "--broker", "kafka://127.0.0.1:1",
                              env={"TRIPWIRE_POLICY_FILE": str(missing)}))
    assert out == (f"Error: policy file {missing} (from TRIPWIRE_POLICY_FILE) does not exist; point "
                   "TRIPWIRE_POLICY_FILE at a policy YAML or unset it to use the shipped default policy")


def test_config_yaml_syntax_error(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("web_port: 7000\ntopics:\n  traces: [a\n")
    out = one_line_exit_2(run(tmp_path, "worker", "--config", str(cfg), "--broker", "kafka://127.0.0.1:1"))
    assert out.startswith(f"Error: {cfg}:4:1: YAML syntax error in the config file: "), out
    assert out.endswith("fix the YAML at that line")
    out = one_line_exit_2(run(tmp_path, "config", "show", env={"TRIPWIRE_CONFIG": str(cfg)}))
    assert f"{cfg}:4:1: YAML syntax error" in out


def test_tripwire_config_pointing_to_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    out = one_line_exit_2(run(tmp_path, "config", "show", env={"TRIPWIRE_CONFIG": str(missing)}))
    assert out == (f"Error: config file {missing} (from TRIPWIRE_CONFIG) does not exist; point TRIPWIRE_CONFIG "
                   "at a YAML settings file or unset it")
    out = one_line_exit_2(run(tmp_path, "worker", "--config", str(missing)))
    assert f"config file {missing} (from --config) does not exist" in out


def test_bad_setting_values_name_their_source(tmp_path: Path) -> None:
    out = one_line_exit_2(run(tmp_path, "config", "show", env={"TRIPWIRE_WEB_PORT": "not-a-port"}))
    assert out.startswith("Error: invalid configuration: TRIPWIRE_WEB_PORT: web_port: Input should be a valid "
                          "integer"), out
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("app_id: t\nweb_port: 99999\nweb_prot: 1\n")
    out = one_line_exit_2(run(tmp_path, "config", "show", "--config", str(cfg)))
    assert f"{cfg}:2:11: web_port: Input should be less than or equal to 65535" in out, out
    assert f"{cfg}:3:11: web_prot: unknown setting 'web_prot' (did you mean 'web_port'?)" in out, out
    out = one_line_exit_2(run(tmp_path, "config", "show", env={"TRIPWIRE_KAFKA__SSL_CAFLE": "/x"}))
    assert "TRIPWIRE_KAFKA__SSL_CAFLE: kafka.ssl_cafle: unknown setting 'kafka.ssl_cafle' (did you mean " \
           "'ssl_cafile'?)" in out, out


def test_misspelt_variables_warn_with_a_suggestion(tmp_path: Path) -> None:
    r = run(tmp_path, "config", "show", env={"TRIPWIRE_WEB_PROT": "7000", "TRIPWIRE_TOKEN": "x",
                                             "TRIPWIRE_SERVICE_HOST": "10.0.0.1", "TRIPWIRE_SIGNING_KEYS__K1": "s"})
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        "warning: unknown environment variable TRIPWIRE_WEB_PROT, ignored (did you mean TRIPWIRE_WEB_PORT?)"]
    assert "web_port: 6066" in r.stdout


@pytest.mark.parametrize("missing_flag", ["--policy", "--config"])
def test_missing_files_named_by_flags(tmp_path: Path, missing_flag: str) -> None:
    out = one_line_exit_2(run(tmp_path, "worker", missing_flag, str(tmp_path / "x.yaml")))
    assert "does not exist" in out and f"(from {missing_flag})" in out
