"""`tripwire config show`, `policy check` and `replay` error paths (no broker needed)."""

from __future__ import annotations

from click.testing import CliRunner

from streams.cli.main import main


def test_config_show_redacts_secrets(monkeypatch) -> None:
    monkeypatch.setenv("TRIPWIRE_SIGNING_KEYS", '{"k1": "signing-secret-value-123"}')
    monkeypatch.setenv("TRIPWIRE_JWT_KEYS", '[{"kid": "a", "alg": "HS256", "secret": "jwt-secret-value-abcdefghijklmnop"}]')
    monkeypatch.setenv("TRIPWIRE_WEB_PORT", "7123")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "web_port: 7123" in result.output
    assert "signing-secret-value-123" not in result.output
    assert "jwt-secret-value" not in result.output
    assert "k1:" in result.output


def test_config_errors_are_one_clear_message(monkeypatch) -> None:
    monkeypatch.setenv("TRIPWIRE_WEB_PORT", "not-a-port")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code != 0
    assert "invalid configuration" in result.output and "web_port" in result.output


def test_policy_check_reports_location(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("budgets:\n  - name: x\n    signal: near_miss_rate\n    objective: -1\n    action: open\n")
    result = CliRunner().invoke(main, ["policy", "check", str(bad)])
    assert result.exit_code == 1
    assert "budgets[0]" in result.output and ":4" in result.output


def test_policy_check_ok_on_the_shipped_default() -> None:
    result = CliRunner().invoke(main, ["policy", "check", "deploy/policy/default.yaml"])
    assert result.exit_code == 0 and "OK" in result.output


def test_replay_unreachable_broker_fails_fast(tmp_path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"schema_version":"1","event_id":"e1","ts":1000,"agent_id":"a","kind":"refusal"}\n')
    result = CliRunner().invoke(main, ["replay", str(f), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "cannot use the Kafka broker at 127.0.0.1:1 (PLAINTEXT): 127.0.0.1:1: TCP connect failed" in result.output
