"""How every tripwire Kafka client connects: TLS and SASL settings, in one place.

One model, :class:`KafkaSecurity`, is read from ``TRIPWIRE_KAFKA__*`` env vars or
the ``kafka:`` block of the config file and turned into the three client dialects
tripwire speaks: faust's ``broker_credentials`` (the worker's consumer, producer and
topic admin), aiokafka keyword arguments (breaker-state reader, drill results) and
kafka-python keyword arguments (topic admin, replay/traffic producer, drill watcher,
incidents reader, the agent-side emitter).

>>> sec = KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
...                     sasl_username="tripwire", sasl_password="s3cret")
>>> kw = sec.kafka_python_kwargs()
>>> kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"]
('SASL_SSL', 'SCRAM-SHA-512', 'tripwire')
>>> sec.describe(), str(sec.sasl_password)
('SASL_SSL SCRAM-SHA-512 as tripwire', '**********')
>>> KafkaSecurity().aiokafka_kwargs()
{'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import ssl
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurityError(ValueError):
    """The TLS/SASL configuration cannot work (missing file, half a key pair, ...)."""


class KafkaSecurity(BaseModel):
    """Transport security and authentication towards the Kafka cluster.

    ``PLAINTEXT`` (the default) is for the embedded broker and loopback only. With
    ``SSL``/``SASL_SSL`` the broker certificate is verified against ``ssl_cafile``
    (or the system trust store when unset), hostname included unless
    ``ssl_check_hostname`` is off. ``ssl_certfile``/``ssl_keyfile`` add a client
    certificate for mutual TLS. ``SASL_*`` need a mechanism, a username and a password;
    ``PLAIN`` sends the password itself, so use it only over ``SASL_SSL``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    security_protocol: Protocol = Field("PLAINTEXT", description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL")
    sasl_mechanism: Mechanism | None = Field(None, description="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_* only)")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) that signed the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate chain (PEM), for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client private key (PEM), for mutual TLS")
    ssl_key_password: SecretStr | None = Field(None, description="passphrase of ssl_keyfile, if encrypted")
    ssl_check_hostname: bool = Field(True, description="verify that the broker certificate names the host")

    @model_validator(mode="after")
    def _consistent(self) -> "KafkaSecurity":
        problems: list[str] = []
        if self.sasl:
            if self.sasl_mechanism is None:
                problems.append(f"{self.security_protocol} needs sasl_mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
            if not self.sasl_username:
                problems.append(f"{self.security_protocol} needs sasl_username")
            if self.sasl_password is None or not self.sasl_password.get_secret_value():
                problems.append(f"{self.security_protocol} needs sasl_password")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            problems.append(f"sasl_* settings are set but security_protocol is {self.security_protocol}; "
                            "use SASL_SSL (or SASL_PLAINTEXT)")
        ssl_files = [self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile]
        if not self.tls and any(ssl_files):
            problems.append(f"ssl_* files are set but security_protocol is {self.security_protocol}; "
                            "use SSL or SASL_SSL")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            problems.append("mutual TLS needs both ssl_certfile and ssl_keyfile")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name}: {path} is not a readable file")
        if problems:
            raise KafkaSecurityError("; ".join(problems))
        return self

    @property
    def tls(self) -> bool:
        """True when the connection is encrypted (SSL or SASL_SSL)."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """True when the client authenticates with SASL."""
        return self.security_protocol.startswith("SASL_")

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context (CA, optional client certificate), or None without TLS.

        Raises :class:`KafkaSecurityError` naming the file when a certificate or key
        cannot be loaded.
        """
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaSecurityError(f"ssl_cafile {self.ssl_cafile}: {exc}") from None
        ctx.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            try:
                ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password=password)
            except (ssl.SSLError, OSError) as exc:
                raise KafkaSecurityError(
                    f"cannot load client certificate {self.ssl_certfile} / key {self.ssl_keyfile}: {exc}") from None
        return ctx

    def _sasl_kwargs(self) -> dict[str, Any]:
        if not self.sasl:
            return {}
        assert self.sasl_password is not None  # validated
        return {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.get_secret_value()}

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer`` / ``AIOKafkaProducer``."""
        kw: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.tls:
            kw["ssl_context"] = self.ssl_context
        kw.update(self._sasl_kwargs())
        return kw

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's ``KafkaProducer`` / ``KafkaConsumer`` / ``KafkaAdminClient``."""
        return self.aiokafka_kwargs()  # kafka-python takes the same names, ssl_context included

    def faust_credentials(self) -> Any:
        """faust ``broker_credentials``: None, ``SSLCredentials`` or ``SASLCredentials``.

        >>> type(KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        ...      sasl_username="u", sasl_password="p").faust_credentials()).__name__
        'SASLCredentials'
        """
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            assert self.sasl_password is not None
            return SASLCredentials(username=self.sasl_username, password=self.sasl_password.get_secret_value(),
                                   mechanism=self.sasl_mechanism, ssl_context=self.ssl_context)
        if self.tls:
            return SSLCredentials(self.ssl_context)
        return None

    def describe(self) -> str:
        """One line for logs and errors, without secrets: ``SASL_SSL SCRAM-SHA-512 as tripwire``."""
        parts = [self.security_protocol]
        if self.sasl:
            parts += [str(self.sasl_mechanism), f"as {self.sasl_username}"]
        if self.tls and self.ssl_certfile:
            parts.append("with client certificate")
        return " ".join(parts)
