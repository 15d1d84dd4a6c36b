"""Kafka TLS/SASL settings: validation, redaction, and the mapping to every client dialect.

The mapping tests check the produced keyword names against the real client libraries'
configuration tables (kafka-python's DEFAULT_CONFIG, aiokafka's constructor signature,
faust's own credentials-to-aiokafka translation), so a renamed or misspelled option fails
here rather than silently connecting in plaintext.
"""

from __future__ import annotations

import inspect
import json
import ssl
from pathlib import Path

import pytest
import trustme
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from streams.cli.main import main
from streams.kafka.security import KafkaSecurity, KafkaSecurityError
from streams.settings import Settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    client = ca.issue_cert("tripwire-worker")
    files = {"ca": root / "ca.pem", "cert": root / "client.crt", "key": root / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


def sasl_ssl(pki: dict[str, Path], mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
    return KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="tripwire",
                         sasl_password="hunter2-s3cret", ssl_cafile=pki["ca"])


# ------------------------------------------------------------------ validation
def test_default_is_plaintext_with_no_credentials() -> None:
    sec = KafkaSecurity()
    assert sec.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.kafka_python_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert sec.faust_credentials() is None and sec.ssl_context is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"security_protocol": "SASL_SSL"}, "SASL_SSL needs sasl_mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "SASL_PLAINTEXT needs sasl_password"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_password": "p"},
     "SASL_SSL needs sasl_username"),
    ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
     "sasl_* settings are set but security_protocol is PLAINTEXT"),
    ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile: /nonexistent/ca.pem is not a readable file"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
     "sasl_mechanism"),
    ({"security_protocol": "TLS"}, "security_protocol"),
])
def test_inconsistent_settings_are_rejected_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        KafkaSecurity(**kwargs)


def test_half_a_client_key_pair_and_ssl_files_without_tls_are_rejected(pki: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="mutual TLS needs both ssl_certfile and ssl_keyfile"):
        KafkaSecurity(security_protocol="SSL", ssl_certfile=pki["cert"])
    with pytest.raises(ValidationError, match="ssl_\\* files are set but security_protocol is SASL_PLAINTEXT"):
        KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
                      sasl_password="p", ssl_cafile=pki["ca"])


def test_a_key_that_does_not_match_its_file_fails_naming_the_files(tmp_path: Path, pki: dict[str, Path]) -> None:
    bogus = tmp_path / "bogus.key"
    bogus.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    sec = KafkaSecurity(security_protocol="SSL", ssl_cafile=pki["ca"], ssl_certfile=pki["cert"], ssl_keyfile=bogus)
    with pytest.raises(KafkaSecurityError, match=f"cannot load client certificate {pki['cert']} / key {bogus}"):
        sec.ssl_context  # noqa: B018


# ------------------------------------------------------------------ mapping to the clients
def test_tls_context_verifies_the_broker_and_presents_the_client_certificate(pki: dict[str, Path]) -> None:
    sec = KafkaSecurity(security_protocol="SSL", ssl_cafile=pki["ca"], ssl_certfile=pki["cert"],
                        ssl_keyfile=pki["key"])
    ctx = sec.ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # exactly our CA, not the system store
    assert sec.aiokafka_kwargs() == {"security_protocol": "SSL", "ssl_context": ctx}
    assert sec.describe() == "SSL with client certificate"
    relaxed = KafkaSecurity(security_protocol="SSL", ssl_cafile=pki["ca"], ssl_check_hostname=False)
    assert relaxed.ssl_context is not None and not relaxed.ssl_context.check_hostname


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_produced_option_is_a_real_client_option(pki: dict[str, Path], mechanism: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    sec = sasl_ssl(pki, mechanism)
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        unknown = set(sec.kafka_python_kwargs()) - set(client.DEFAULT_CONFIG)
        assert not unknown, f"kafka-python {client.__name__} has no option {unknown}"
    for client in (AIOKafkaConsumer, AIOKafkaProducer):
        unknown = set(sec.aiokafka_kwargs()) - set(inspect.signature(client.__init__).parameters)
        assert not unknown, f"aiokafka {client.__name__} has no option {unknown}"
    kw = sec.kafka_python_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == mechanism
    assert kw["sasl_plain_username"] == "tripwire" and kw["sasl_plain_password"] == "hunter2-s3cret"
    assert kw["ssl_context"] is sec.ssl_context


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT", "PLAINTEXT"])
def test_faust_gives_its_clients_exactly_what_tripwire_gives_its_own(pki: dict[str, Path], protocol: str) -> None:
    """The worker's faust consumer/producer/admin connect the same way as the state reader and the CLI."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    kwargs: dict = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        kwargs.update(sasl_mechanism="SCRAM-SHA-256", sasl_username="tw", sasl_password="pw")
    if protocol.endswith("SSL"):
        kwargs.update(ssl_cafile=pki["ca"])
    sec = KafkaSecurity(**kwargs)
    faust_side = dict(credentials_to_aiokafka_auth(sec.faust_credentials()))
    if faust_side.get("ssl_context") is None:
        faust_side.pop("ssl_context", None)
    assert faust_side == sec.aiokafka_kwargs()


def test_the_embedded_stack_ignores_cluster_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tripwire up` talks to its own loopback broker: TLS/SASL env vars meant for a cluster must not leak in."""
    import streams.ops.up as up

    source = inspect.getsource(up.run_up)
    assert '"kafka": KafkaSecurity()' in source and 'TRIPWIRE_KAFKA__SECURITY_PROTOCOL"] = "PLAINTEXT"' in source


# ------------------------------------------------------------------ settings, env and config show
def test_env_vars_configure_the_worker_and_config_show_redacts_the_password(
        monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    env = {"TRIPWIRE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "TRIPWIRE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "TRIPWIRE_KAFKA__SASL_USERNAME": "tripwire", "TRIPWIRE_KAFKA__SASL_PASSWORD": "hunter2-s3cret",
           "TRIPWIRE_KAFKA__SSL_CAFILE": str(pki["ca"])}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TRIPWIRE_CONFIG", raising=False)
    s = Settings()
    assert s.kafka.describe() == "SASL_SSL SCRAM-SHA-512 as tripwire"
    assert type(s.kafka.faust_credentials()).__name__ == "SASLCredentials"
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "hunter2-s3cret" not in result.output
    shown = yaml.safe_load(result.output)["kafka"]
    assert shown["sasl_password"] == "**********" and shown["sasl_username"] == "tripwire"
    assert shown["security_protocol"] == "SASL_SSL" and shown["ssl_cafile"] == str(pki["ca"])


def test_config_file_kafka_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    cfg = tmp_path / "tripwire.yaml"
    cfg.write_text(yaml.safe_dump({"kafka": {"security_protocol": "SSL", "ssl_cafile": str(pki["ca"]),
                                             "ssl_certfile": str(pki["cert"]), "ssl_keyfile": str(pki["key"])}}))
    monkeypatch.setenv("TRIPWIRE_CONFIG", str(cfg))
    assert Settings().kafka.describe() == "SSL with client certificate"


def test_cli_reports_a_bad_security_setting_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"schema_version": "1"}) + "\n")
    monkeypatch.delenv("TRIPWIRE_CONFIG", raising=False)
    monkeypatch.setenv("TRIPWIRE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TRIPWIRE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    result = CliRunner().invoke(main, ["replay", str(f), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 2  # a configuration mistake (streams.cli.errors)
    assert "invalid configuration" in result.output and "SASL_SSL needs sasl_username" in result.output
