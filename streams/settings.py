"""One settings model for the worker, read from ``TRIPWIRE_*`` env vars and an optional YAML file.

Precedence: explicit CLI flags > environment (``TRIPWIRE_BROKER``, ``TRIPWIRE_WEB_PORT``,
nested with ``__`` e.g. ``TRIPWIRE_TOPICS__TRACES``) > config file (``--config`` or
``TRIPWIRE_CONFIG``) > defaults.

This module is the only home of defaults: the CLI's options name the same ``TRIPWIRE_*``
variables (click ``envvar=``) and show the defaults of :data:`DEFAULTS`.

>>> DEFAULTS.broker, DEFAULTS.topics.traces, DEFAULTS.web_url
('kafka://127.0.0.1:19092', 'agent-traces', 'http://127.0.0.1:6066')
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from streams.contract.files import DEFAULT_POLICY_PATH
from streams.engine.tuning import EngineTuning
from streams.kafka.security import KafkaSecurity

#: the shipped default policy (``deploy/policy/default.yaml`` in a checkout, package data of a wheel)
DEFAULT_POLICY = DEFAULT_POLICY_PATH


class Topics(BaseModel):
    """Kafka topic names (DESIGN.md defaults)."""

    traces: str = "agent-traces"
    dlq: str = "agent-traces-dlq"
    breaker_state: str = "breaker-state"
    breaker_events: str = "breaker-events"
    otlp: str = "otlp_spans"
    #: internal: cross-agent scope counts per trace partition, shared between workers (compacted)
    scope_partials: str = "scope-partials"


def bootstrap_of(url: str) -> str:
    """host:port[,host:port] of a broker URL.

    >>> bootstrap_of("kafka://a:9092;b:9092"), bootstrap_of("127.0.0.1:19092")
    ('a:9092,b:9092', '127.0.0.1:19092')
    """
    return url.split("://", 1)[-1].replace(";", ",")


class DrillSLO(BaseModel):
    """Drill step SLOs in seconds: the ``drill_slo:`` block of the settings.

    Env ``TRIPWIRE_DRILL_SLO__OPEN_S`` (nested, like every block) or ``TRIPWIRE_DRILL_SLO_OPEN_S``
    (documented in docs/drills.md), a YAML file (``--slo-file``) or flags.

    >>> DrillSLO.load(open_s=20).open_s, DrillSLO().deny_s
    (20.0, 1.0)
    """

    model_config = {"extra": "forbid"}

    open_s: float = Field(10.0, gt=0, description="spike start → breaker open (and detection)")
    deny_s: float = Field(1.0, gt=0, description="breaker open → authz denies")
    alert_s: float = Field(30.0, gt=0, description="breaker open → alert in Alertmanager; reset → resolved")
    recovery_s: float = Field(10.0, gt=0, description="reset → closed on breaker-state and authz allows")
    grace_s: float = Field(5.0, ge=0, description="keep waiting this long past an SLO to report the real time")
    settle_s: float = Field(6.0, ge=0, description="reset no earlier than this after the spike (workers evaluate "
                            "good-only events every 5 s), and watch this long after recovery that it stays closed")

    @classmethod
    def load(cls, file: str | os.PathLike[str] | None = None, **overrides: float | None) -> DrillSLO:
        """Defaults < YAML file (top level or under ``drill_slo:``) < env < explicit overrides.

        Raises ``ValueError`` (pydantic's ValidationError is one) on a malformed file or value.
        """
        import yaml

        data: dict[str, Any] = {}
        if file is not None:
            doc = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
            if not isinstance(doc, dict):
                raise ValueError(f"{file}: expected a mapping of SLOs")
            data = dict(doc.get("drill_slo", doc))
        data.update(drill_slo_env(os.environ))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def drill_slo_env(environ: Any) -> dict[str, str]:
    """The drill SLOs set in ``environ``: ``TRIPWIRE_DRILL_SLO_<FIELD>`` or ``TRIPWIRE_DRILL_SLO__<FIELD>``.

    >>> drill_slo_env({"TRIPWIRE_DRILL_SLO_DENY_S": "3", "TRIPWIRE_DRILL_SLO__OPEN_S": "9", "OTHER": "x"})
    {'deny_s': '3', 'open_s': '9'}
    """
    prefix = "TRIPWIRE_DRILL_SLO_"
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key.upper().startswith(prefix):
            name = key[len(prefix):].lstrip("_").lower()
            if name in DrillSLO.model_fields:
                out[name] = value
    return out


class _DrillSLOEnv(PydanticBaseSettingsSource):
    """Settings source for the single-underscore ``TRIPWIRE_DRILL_SLO_<FIELD>`` spelling."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = drill_slo_env(os.environ)
        return {"drill_slo": values} if values else {}


#: the YAML file of the settings being built (``load_settings(config=…)``), else ``$TRIPWIRE_CONFIG``
_config_file: ContextVar[str | None] = ContextVar("tripwire_config_file", default=None)


#: the published runbook page; alerts link ``#<alertname in lower case>`` (override: ``runbook_base_url``)
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/tripwire/tripwire/blob/main/docs/runbooks.md"


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
    http_read_timeout_s: float = Field(
        15.0, gt=0, le=3600,
        description="the web server closes a connection that has not sent a request's complete headers within this "
        "time of opening (or of its previous response: also the keep-alive idle time), or its body within this time "
        "of the headers (slow-loris)")
    http_max_connections: int = Field(
        1024, ge=1, description="concurrent connections to the web server; more are closed on arrival")
    data_dir: Path = Field(Path(".tripwire"), description="worker state (faust tables), broker log, reports")
    topics: Topics = Field(default_factory=Topics)
    partitions: int = Field(8, ge=1, le=1024, description="partitions of agent-traces when tripwire creates it")
    max_message_bytes: int = Field(256 * 1024, ge=1024, description="messages larger than this go to the DLQ")
    dlq_payload_bytes: int = Field(16 * 1024, ge=0, description="original bytes kept (base64) in a DLQ record")
    dedupe_horizon_s: float = Field(3600.0, ge=0, description="a repeated event_id inside this horizon is dropped")
    dedupe_max_ids: int = Field(200_000, ge=1000, description="event ids remembered per partition")
    max_agents: int = Field(200, ge=1, description="distinct agent label values on /metrics before 'other'")
    max_tools: int = Field(200, ge=1, description="distinct tool label values on /metrics before 'other'")
    metrics_tools_per_agent: int = Field(
        3, ge=0, description="per-tool near-miss series on /metrics for each agent's this many tools with the most "
        "near-misses (longest window); every agent always has its all-tools (tool=\"*\") series")
    metrics_top_scopes: int = Field(
        50, ge=0, description="agent x tool scopes with per-scope budget series on /metrics besides non-closed ones: "
        "the this many with the highest burn rate (agent, tool and global scopes are always exported)")
    metrics_max_denied_scopes: int = Field(
        1000, ge=1, description="distinct scope label values of tripwire_authz_denied_total before 'other'")
    lateness_s: float = Field(300.0, ge=0, description="events this late still land in their window bucket")
    max_future_skew_s: float = Field(
        300.0, ge=0, description="events dated more than this past the worker's wall clock go to the DLQ as "
        "ts_future (never clamped): one odd event cannot move any clock far")
    checkpoint_interval_s: float = Field(2.0, gt=0, description="how often in-memory state is written to changelogs")
    checkpoint_max_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024,
        description="compressed agent state written per checkpoint interval; the rest waits its turn "
        "(oldest change first), bounding changelog traffic when many agents are active")
    store: str = Field("memory://", description="faust table store: memory:// or rocksdb://")
    policy_file: Path = Field(DEFAULT_POLICY, description="risk-budget policy (YAML)")
    fail_mode: Literal["open", "closed"] | None = Field(
        None,
        description="authz/introspection answer while breaker state is unknown (not yet recovered): closed = deny, "
        "open = allow. Set (TRIPWIRE_FAIL_MODE), it overrides the policy's fail_mode, also across policy reloads; "
        "unset, the policy's fail_mode applies (shipped default: closed)",
    )
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict, description="HMAC keys by key id")
    require_signature: list[str] = Field(
        default_factory=list,
        description="events that must come in a validly signed message, as scope globs: '*', 'agent:<glob>', "
        "'tenant:<glob>', 'tenant:<glob>/agent:<glob>' (others go to the DLQ as bad_signature); a rule with a "
        "tenant glob also matches events without a tenant (fail closed)",
    )
    signing_key_scopes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="what each key id may sign, as scope globs (same grammar as require_signature); an event of "
        "a signed message outside its key's binding goes to the DLQ as bad_signature. A key id without an entry "
        "is bound to every agent and tenant; a tenant glob does not cover events without a tenant",
    )
    signature_max_age_s: float = Field(
        900.0, gt=0,
        description="replay window: an event of a signed message older than its partition's newest signed event "
        "ts minus this goes to the DLQ as replayed (inside the window, dedupe drops replays); <= dedupe_horizon_s",
    )
    drill_key_id: str | None = Field(
        None, description="signing key id of drill traffic: when set, events of drill agents (the policy's "
        "drill_prefix) must be signed with it, and it signs drill agents only; `tripwire drill` signs with it",
    )
    internal_auth: Literal["permissive", "required"] = Field(
        "required",
        description="with a signing keyring: records on breaker-state, breaker-events and scope-partials that are "
        "not signed by a worker are ignored and counted (required) or accepted and counted (permissive: only "
        "while rolling out a keyring to a deployment that ran without one). Badly signed records are always "
        "ignored. Without a keyring nothing can be authenticated: every record is accepted (use Kafka ACLs)",
    )
    internal_key_ids: list[str] = Field(
        default_factory=list,
        description="signing_keys ids that authenticate internal records: the first signs, all verify (rotation: "
        "[new, old], then [new]). Default: the first key id in sorted order. Give these keys to workers only: "
        "whoever holds one can write breaker states",
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
    runbook_base_url: str = Field(DEFAULT_RUNBOOK_BASE_URL, description="where docs/runbooks.md is published: every "
                                  "alert's runbook_url is this + '#<alertname in lower case>' (the worker's "
                                  "Alertmanager posts and `tripwire rules`)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    uvloop: bool = Field(True, description="run the worker on uvloop when it is installed")
    drill_slo: DrillSLO = Field(default_factory=DrillSLO, description="step SLOs of `tripwire drill` (seconds)")
    engine: EngineTuning = Field(default_factory=EngineTuning,
                                 description="evaluation pacing and memory caps of the decision engine")

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
            SignaturePolicy.of(self)
        except SigningConfigError as exc:
            raise ValueError(str(exc)) from None
        if self.signing_keys and self.signature_max_age_s > self.dedupe_horizon_s:
            raise ValueError(f"signature_max_age_s ({self.signature_max_age_s:g}) must be <= dedupe_horizon_s "
                             f"({self.dedupe_horizon_s:g}): a replay inside the window must still be deduped")
        return self

    @model_validator(mode="after")
    def _internal_keys(self) -> "Settings":
        unknown = [k for k in self.internal_key_ids if k not in self.signing_keys]
        if unknown:
            raise ValueError(f"internal_key_ids names keys not in signing_keys: {', '.join(map(ascii, unknown))}")
        return self

    @property
    def bootstrap(self) -> str:
        """host:port[,host:port] for kafka-python/aiokafka clients."""
        return bootstrap_of(self.broker)

    @property
    def web_url(self) -> str:
        """Base URL of this worker's HTTP API."""
        return f"http://{self.web_host}:{self.web_port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, _DrillSLOEnv(settings_cls)]
        config_file = _config_file.get() or os.environ.get("TRIPWIRE_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


#: every field at its default (no environment, no file): what the CLI shows as defaults
DEFAULTS = Settings.model_construct()


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from env + optional YAML file ``config`` (else ``$TRIPWIRE_CONFIG``), with CLI ``overrides``
    (None values ignored). The file is handed to the settings sources directly: the process environment is
    left as it was, so a later ``Settings()`` or a child process does not silently inherit it."""
    token = _config_file.set(str(config) if config is not None else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _config_file.reset(token)
