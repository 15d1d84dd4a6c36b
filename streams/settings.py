"""One settings model for the worker, read from ``TRIPWIRE_*`` env vars and an optional YAML file.

Precedence: explicit CLI flags > environment (``TRIPWIRE_BROKER``, ``TRIPWIRE_WEB_PORT``,
nested with ``__`` e.g. ``TRIPWIRE_TOPICS__TRACES``) > config file (``--config`` or
``TRIPWIRE_CONFIG``) > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from streams.kafka.security import KafkaSecurity

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = REPO_ROOT / "deploy" / "policy" / "default.yaml"


class Topics(BaseModel):
    """Kafka topic names (DESIGN.md defaults)."""

    traces: str = "agent-traces"
    dlq: str = "agent-traces-dlq"
    breaker_state: str = "breaker-state"
    breaker_events: str = "breaker-events"
    otlp: str = "otlp_spans"
    #: internal: cross-agent scope counts per trace partition, shared between workers (compacted)
    scope_partials: str = "scope-partials"


class Settings(BaseSettings):
    """Effective worker configuration."""

    model_config = SettingsConfigDict(env_prefix="TRIPWIRE_", env_nested_delimiter="__", extra="forbid")

    broker: str = Field("kafka://127.0.0.1:19092", description="Kafka bootstrap URL(s), kafka://host:port[;host:port]")
    kafka: KafkaSecurity = Field(
        default_factory=KafkaSecurity,
        description="TLS/SASL towards Kafka (TRIPWIRE_KAFKA__SECURITY_PROTOCOL, TRIPWIRE_KAFKA__SASL_PASSWORD, ...)",
    )
    app_id: str = Field("tripwire", description="consumer group id and prefix of internal topics")
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    data_dir: Path = Field(Path(".tripwire"), description="worker state (faust tables), broker log, reports")
    topics: Topics = Field(default_factory=Topics)
    partitions: int = Field(8, ge=1, le=1024, description="partitions of agent-traces when tripwire creates it")
    max_message_bytes: int = Field(256 * 1024, ge=1024, description="messages larger than this go to the DLQ")
    dlq_payload_bytes: int = Field(16 * 1024, ge=0, description="original bytes kept (base64) in a DLQ record")
    dedupe_horizon_s: float = Field(3600.0, ge=0, description="a repeated event_id inside this horizon is dropped")
    dedupe_max_ids: int = Field(200_000, ge=1000, description="event ids remembered per partition")
    max_agents: int = Field(200, ge=1, description="distinct agent label values on /metrics before 'other'")
    max_tools: int = Field(200, ge=1, description="distinct tool label values on /metrics before 'other'")
    lateness_s: float = Field(300.0, ge=0, description="events this late still land in their window bucket")
    checkpoint_interval_s: float = Field(2.0, gt=0, description="how often in-memory state is written to changelogs")
    checkpoint_max_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024,
        description="compressed agent state written per checkpoint interval; the rest waits its turn "
        "(oldest change first), bounding changelog traffic when many agents are active")
    store: str = Field("memory://", description="faust table store: memory:// or rocksdb://")
    policy_file: Path = Field(DEFAULT_POLICY, description="risk-budget policy (YAML)")
    fail_mode: Literal["open", "closed"] = Field(
        "closed",
        description="authz answer while breaker state is unknown (not yet recovered): closed = deny, open = allow",
    )
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict, description="HMAC keys by key id")
    require_signature: list[str] = Field(
        default_factory=list,
        description="events that must come in a validly signed message, as scope globs: '*', 'agent:<glob>', "
        "'tenant:<glob>', 'tenant:<glob>/agent:<glob>' (others go to the DLQ as bad_signature)",
    )
    metrics_cache_s: float = Field(5.0, ge=0, description="detector gauges are recomputed at most this often")
    evaluate_interval_s: float = Field(0.25, gt=0, description="how often changed scopes are evaluated")
    operators: list[dict[str, str]] = Field(
        default_factory=list,
        description="operator bearer tokens, stored hashed: [{name, role: viewer|operator|admin, token_sha256}]"
        " (make one with `tripwire token new`)",
    )
    operator_tokens_file: Path | None = Field(
        None, description="optional JSON/YAML file holding more operator entries (same shape as `operators`)"
    )
    ingest_tokens: list[dict[str, str]] = Field(
        default_factory=list,
        description="bearer tokens for POST /v1/traces, stored hashed: [{name, token_sha256}]"
        " (operator and admin tokens are accepted too)",
    )
    jwt_keys: list[dict[str, Any]] = Field(
        default_factory=list,
        description="tool-token verification keys for /v1/introspect: [{kid, alg: HS256, secret} | "
        "{kid, alg: RS256, public_key_pem}]",
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    alertmanager_url: str | None = Field(None, description="Alertmanager base URL for escalation pages")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    uvloop: bool = Field(True, description="run the worker on uvloop when it is installed")

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        if "://" not in v:
            v = f"kafka://{v}"
        scheme = v.split("://", 1)[0]
        if scheme not in {"kafka", "aiokafka"}:
            raise ValueError(f"broker URL scheme must be kafka://, got {scheme}://")
        return v

    @model_validator(mode="after")
    def _signing(self) -> "Settings":
        from streams.contract.signing import SignaturePolicy, SigningConfigError

        try:
            SignaturePolicy.from_settings(self.signing_keys, self.require_signature)
        except SigningConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def bootstrap(self) -> str:
        """host:port[,host:port] for kafka-python/aiokafka clients."""
        return self.broker.split("://", 1)[1].replace(";", ",")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("TRIPWIRE_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from env + optional YAML file, with CLI ``overrides`` (None values ignored)."""
    if config is not None:
        os.environ["TRIPWIRE_CONFIG"] = str(config)
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
