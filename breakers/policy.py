"""The risk-budget policy file: pydantic model, YAML loading, located validation errors.

A policy is YAML (see ``deploy/policy/default.yaml`` for a documented example)::

    version: "2025-01-a"          # optional; default "sha256:<12 hex of the file>"
    fail_mode: closed             # authz answer when breaker state is unknown
    consequential_tools: ["payments.*", "shell"]
    tool_names: {case_fold: false}  # true: Shell, SHELL and shell are one tool everywhere
    budgets:
      - name: weighted-near-miss
        signal: weighted_near_miss_rate
        scopes: ["agent:*", "agent:*/tool:*"]
        objective: 0.02
        action: escalate

Durations are integers (seconds) or strings like ``90s``, ``5m``, ``1h``, ``3d``, ``1w``
(:mod:`detectors.durations` parses them and spells windows in verdicts and metric labels).
Unknown keys are errors everywhere. :func:`check_policy_text` returns every problem with its
YAML path (``budgets[2].windows[0].burn_rate``) and 1-based line:column; it never prints.

``fail_mode`` defaults to ``closed`` (deny when the breaker state is unknown, e.g. while a
worker recovers ``breaker-state`` after a restart or when the gateway cannot reach it): a
safety interlock that silently allows while it is blind defeats its purpose, and the outage is
visible (403 with ``X-Tripwire-State: unknown``) and short (state recovery from the compacted
topic). Deployments that value availability over containment set ``fail_mode: open``.
"""
from __future__ import annotations

import functools

import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from detectors.config import ReliabilityConfig
from detectors.durations import format_duration, parse_duration  # noqa: F401 (format_duration: re-export)

from .scope import Scope, ScopeError, ScopePattern, canonical_tool, input_scope, parse_scope
from .shipped import DEFAULT_POLICY_RESOURCE, shipped_file

Signal = Literal[
    "near_miss_rate",
    "weighted_near_miss_rate",
    "incident_count",
    "incident_rate",
    "critical_incident_rate",
    "error_rate",
    "cost",
    "drift",
]
Action = Literal["open", "escalate", "shadow"]
#: how strongly each action restricts: the strongest firing rule of a budget wins
ACTION_RANK: dict[str, int] = {"shadow": 1, "escalate": 2, "open": 3}
Severity = Literal["page", "ticket"]
RATIO_SIGNALS = frozenset(
    {"near_miss_rate", "weighted_near_miss_rate", "incident_rate", "critical_incident_rate", "error_rate"}
)
AMOUNT_SIGNALS = frozenset({"incident_count", "cost"})
#: signals whose bad events are a plain count, so a window rule may test them with ``poisson_alpha``
POISSON_SIGNALS = frozenset({"near_miss_rate", "incident_rate", "critical_incident_rate", "error_rate", "incident_count"})

Duration = Annotated[int, BeforeValidator(parse_duration)]


def _check_pattern(text: str) -> str:
    try:
        ScopePattern.parse(text)
    except ScopeError as e:
        raise ValueError(str(e)) from None
    return text


PatternStr = Annotated[str, AfterValidator(_check_pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowRule(_Strict):
    """Multiwindow burn-rate rule: fires when burn > ``burn_rate`` over BOTH windows.

    ``short`` may be omitted for a single-window threshold rule. ``action`` overrides the
    budget's action; if omitted, page rules use the budget's action and ticket rules only
    report (``shadow``).

    A **Poisson rule** sets ``poisson_alpha`` instead of ``burn_rate`` (count signals only,
    :data:`POISSON_SIGNALS`): it fires when the raw bad count ``k`` is improbable at the
    objective, ``P(X >= k | lam) < poisson_alpha`` with ``lam = objective × calls`` in the window
    (``objective × window / period`` for ``incident_count``), over the long AND the short window.
    It catches a few bad events at low volume, where a rate needs more calls than it gets.
    """

    long: Duration
    short: Duration | None = None
    burn_rate: float | None = Field(default=None, gt=0, le=10000)
    poisson_alpha: float | None = Field(default=None, gt=0, le=0.5)
    severity: Severity = "page"
    action: Action | None = None

    @model_validator(mode="after")
    def _short_le_long(self) -> "WindowRule":
        if self.short is not None and self.short > self.long:
            raise ValueError("short window must not be longer than the long window")
        if (self.burn_rate is None) == (self.poisson_alpha is None):
            raise ValueError("a window rule needs exactly one of burn_rate and poisson_alpha")
        return self


def default_windows() -> list[WindowRule]:
    """Google SRE workbook multiwindow, multi-burn-rate alerting for a 30-day period."""
    return [
        WindowRule(long=3600, short=300, burn_rate=14.4, severity="page"),
        WindowRule(long=21600, short=1800, burn_rate=6.0, severity="page"),
        WindowRule(long=259200, short=21600, burn_rate=1.0, severity="ticket"),
    ]


class MinEvidence(_Strict):
    """Minimum evidence, checked on each rule's long window, before anything can fire.

    ``min_calls``: denominator (tool calls; tool+LLM calls for error_rate) for ratio signals.
    ``min_bad``: raw bad events (unweighted flags, incidents, errors; USD for cost; for drift
    flags+incidents). Always ≥ 1, so a scope with no bad events never fires.
    ``confidence``: optional; the Wilson lower bound of the rate at this confidence must also
    exceed the objective (ratio signals only).
    """

    min_calls: int = Field(default=20, ge=0)
    min_bad: float = Field(default=5, ge=1)
    confidence: float | None = Field(default=None, gt=0.5, lt=1)


class Budget(_Strict):
    """One risk budget: a signal, the scopes it watches, an objective, rules and an action."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    signal: Signal
    scopes: list[PatternStr] = Field(min_length=1)
    objective: float | None = Field(default=None, gt=0)
    period: Duration = 30 * 86400
    windows: list[WindowRule] = Field(default_factory=default_windows, min_length=1)
    min_evidence: MinEvidence = Field(default_factory=MinEvidence)
    action: Action = "open"
    cooldown: Duration = 300
    half_open_probes: int = Field(default=5, ge=1, le=1000)
    backoff_factor: float = Field(default=2.0, ge=1, le=100)
    max_cooldown: Duration = 3600
    clear_after: Duration = 1800
    description: str = ""

    _patterns: tuple[ScopePattern, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _coherent(self) -> "Budget":
        if self.signal != "drift" and self.objective is None:
            raise ValueError(f"objective is required for signal {self.signal}")
        if self.signal in RATIO_SIGNALS and self.signal != "weighted_near_miss_rate" and self.objective is not None and self.objective > 1:
            raise ValueError("objective of a ratio signal must be ≤ 1 (e.g. 0.05 for 5%)")
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be ≥ cooldown")
        if self.signal not in POISSON_SIGNALS and any(w.poisson_alpha is not None for w in self.windows):
            raise ValueError(f"poisson_alpha needs a count signal ({', '.join(sorted(POISSON_SIGNALS))}), "
                             f"not {self.signal}")
        self._patterns = tuple(ScopePattern.parse(p) for p in self.scopes)
        return self

    def applies_to(self, scope: str | Scope) -> bool:
        """Does any of this budget's scope patterns match ``scope``?"""
        return any(p.matches(scope) for p in self._patterns)

    def cooldown_for(self, open_count: int) -> float:
        """Cool-down after the ``open_count``-th consecutive opening (1-based), capped."""
        n = max(open_count, 1) - 1
        return float(min(self.cooldown * self.backoff_factor ** min(n, 64), self.max_cooldown))

    @property
    def longest_window(self) -> int:
        return max(w.long for w in self.windows)


class Approvals(_Strict):
    """Limits on operator approvals of escalated scopes."""

    default_ttl: Duration = 3600
    max_ttl: Duration = 8 * 3600

    @model_validator(mode="after")
    def _ttl(self) -> "Approvals":
        if self.default_ttl > self.max_ttl:
            raise ValueError("default_ttl must be ≤ max_ttl")
        return self


class ReliabilityPolicy(_Strict):
    """How the reliability figures read the data (docs/metrics.md, section *Reliability*).

    ``attempt_kind``: ``auto`` (the producer's ``attempt_kind``, else detected from the data),
    ``retry`` or ``trial`` (overrides both for every agent). ``materiality``: MTBCE counts
    incidents at or above this severity (and incidents without one). ``confidence``: cost of
    confidence is the spend to be this sure a task has succeeded. ``retry_settle``: a retried
    task with no success and no new attempt for this long (agent event time) was given up.
    """

    attempt_kind: Literal["auto", "retry", "trial"] = "auto"
    materiality: Literal["low", "medium", "high", "critical"] = ReliabilityConfig.materiality  # type: ignore[assignment]
    confidence: float = Field(default=ReliabilityConfig.confidence, gt=0.0, lt=1.0)
    retry_settle: Duration = int(ReliabilityConfig.settle_s)


class ToolNames(_Strict):
    """How tool names are spelled (:func:`breakers.scope.canonical_tool`, applied once to every input).

    ``case_fold: false`` (default): ``Search`` and ``search`` are different tools, as real tool
    names are CamelCase. ``case_fold: true``: every tool name (events, ``X-Tool``, token claims,
    operator scopes, ``consequential_tools`` and budget scope globs) is case-folded, so ``SHELL``
    cannot dodge a ``shell`` rule. Percent-decoding (exactly once) applies either way.
    """

    case_fold: bool = False


class PolicyMemo:
    """Per-policy lookups (budget by name) and caches (scope → budgets, tool → canonical name, tool →
    consequential?), each cache bounded by its user."""

    __slots__ = ("scopes", "tools", "conseq", "by_name")

    def __init__(self, budgets: list[Budget]) -> None:
        self.by_name = {b.name: b for b in budgets}
        self.scopes: dict[str, tuple[Budget, ...]] = {}
        self.tools: dict[str, str] = {}
        self.conseq: dict[str, bool] = {}


class Policy(_Strict):
    """A validated policy. ``policy_version`` is ``version`` or a content hash."""

    version: str | None = Field(default=None, min_length=1, max_length=64)
    fail_mode: Literal["open", "closed"] = "closed"
    consequential_tools: list[str] = Field(default_factory=list)
    tool_names: ToolNames = Field(default_factory=ToolNames)
    drill_prefix: str = Field(default="drill-", min_length=1)
    approvals: Approvals = Field(default_factory=Approvals)
    probe_timeout: Duration = 600
    reliability: ReliabilityPolicy = Field(default_factory=ReliabilityPolicy)
    budgets: list[Budget] = Field(default_factory=list)

    _content_hash: str = PrivateAttr(default="")
    _conseq_globs: tuple[str, ...] = PrivateAttr(default=())

    @functools.cached_property
    def memo(self) -> "PolicyMemo":
        """Lookup caches of the hot paths, per policy (plain attributes: private ones are slow to read)."""
        return PolicyMemo(self.budgets)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> "Policy":
        """pydantic's copy, less the cached lookups (computed again for the copy's own fields)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("memo", None)
        copy.__dict__.pop("policy_version", None)
        return copy

    @model_validator(mode="after")
    def _unique_names(self) -> "Policy":
        seen: set[str] = set()
        for b in self.budgets:
            if b.name in seen:
                raise ValueError(f"duplicate budget name {b.name!r}")
            seen.add(b.name)
        return self

    @model_validator(mode="after")
    def _canonical_tool_globs(self) -> "Policy":
        """Tool globs spelled like every tool name (:meth:`canonical_tool`), so ``Shell`` / ``sh%65ll``
        cannot slip past a ``shell`` glob."""
        fold = self.tool_names.case_fold
        try:
            self._conseq_globs = tuple(canonical_tool(g, fold) for g in self.consequential_tools)
            for b in self.budgets:
                b._patterns = tuple(p.with_canonical_tool(fold) for p in b._patterns)
        except ScopeError as e:
            raise ValueError(f"tool glob: {e}") from None
        return self

    def canonical_tool(self, name: str) -> str:
        """:func:`breakers.scope.canonical_tool` with this policy's ``tool_names`` (ScopeError if invalid;
        cached, bounded: called for every event's tool)."""
        hit = self.memo.tools.get(name)
        if hit is None:
            hit = canonical_tool(name, self.tool_names.case_fold)
            if len(self.memo.tools) > 65536:
                self.memo.tools.clear()
            self.memo.tools[name] = hit
        return hit

    def input_scope(self, text: str) -> str:
        """:func:`breakers.scope.input_scope` with this policy's ``tool_names`` (ScopeError if invalid)."""
        return input_scope(text, self.tool_names.case_fold)

    @functools.cached_property
    def policy_version(self) -> str:
        """``version``, else ``sha256:`` and 12 hex of the file (read on every evaluation: computed once)."""
        return self.version or f"sha256:{self._content_hash[:12] or _hash(self.model_dump_json())[:12]}"

    def budget(self, name: str | None) -> Budget | None:
        """The budget called ``name`` (None if absent, e.g. after a policy reload)."""
        return self.memo.by_name.get(name) if name else None

    def budgets_for(self, scope: str) -> tuple[Budget, ...]:
        """Budgets whose patterns match ``scope`` (cached per scope string, bounded)."""
        hit = self.memo.scopes.get(scope)
        if hit is None:
            parsed = parse_scope(scope)  # ScopeError for an invalid scope
            hit = tuple(b for b in self.budgets if b.applies_to(parsed))
            if len(self.memo.scopes) > 65536:
                self.memo.scopes.clear()
            self.memo.scopes[scope] = hit
        return hit

    def is_consequential(self, tool: str | None) -> bool:
        """Does the canonical ``tool`` match a ``consequential_tools`` glob? (cached, bounded)

        ``tool`` must already be canonical (:meth:`canonical_tool`); the globs are.
        """
        if tool is None:
            return False
        hit = self.memo.conseq.get(tool)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(tool, g) for g in self._conseq_globs)
            if len(self.memo.conseq) > 65536:
                self.memo.conseq.clear()
            self.memo.conseq[tool] = hit
        return hit


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ loading + errors

@dataclass(frozen=True, slots=True)
class PolicyError:
    """One problem in a policy file, located by YAML path and line:column (1-based)."""

    filename: str
    path: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = self.filename
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        return f"{where}: {self.path or '<root>'}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "path": self.path, "line": self.line,
                "column": self.column, "message": self.message}


class PolicyInvalid(ValueError):
    """Raised by :func:`load_policy` / :func:`parse_policy`; ``.errors`` lists the problems."""

    def __init__(self, errors: list[PolicyError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


MAX_POLICY_BYTES = 1 << 20
MAX_POLICY_NODES = 50_000


class _TooBig(Exception):
    pass


def format_path(loc: tuple[Any, ...]) -> str:
    """('budgets', 2, 'windows', 0, 'burn_rate') → 'budgets[2].windows[0].burn_rate'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class _Marks:
    """Map YAML paths to (line, column) using the composed node tree."""

    def __init__(self, limit: int = MAX_POLICY_NODES) -> None:
        self.count, self.limit = 0, limit
        self.value: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.key: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.duplicates: list[tuple[tuple[Any, ...], tuple[int, int]]] = []

    def walk(self, node: yaml.Node | None, path: tuple[Any, ...] = ()) -> None:
        if node is None:
            return
        self.count += 1
        if self.count > self.limit:  # also stops alias ("billion laughs") expansion
            raise _TooBig
        self.value[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                here = (k.start_mark.line + 1, k.start_mark.column + 1)
                if key in seen:
                    self.duplicates.append((path + (key,), here))
                seen.add(key)
                self.key[path + (key,)] = here
                self.walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, path + (i,))

    def locate(self, loc: tuple[Any, ...], is_key: bool) -> tuple[int | None, int | None]:
        if is_key and loc in self.key:
            return self.key[loc]
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.value:
                return self.value[loc[:n]]
        return None, None


def _validate(text: str, filename: str) -> tuple[Policy | None, list[PolicyError]]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        return None, [PolicyError(filename, "", None, None, f"policy file larger than {MAX_POLICY_BYTES} bytes")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(e, "problem", None) or str(e)
        return None, [PolicyError(filename, "", line, col, f"YAML syntax error: {problem}")]
    marks = _Marks()
    try:
        marks.walk(node)
    except _TooBig:
        return None, [PolicyError(filename, "", None, None,
                                  f"policy has more than {MAX_POLICY_NODES} YAML nodes (after aliases)")]
    errors = [
        PolicyError(filename, format_path(path), line, col, "duplicate key")
        for path, (line, col) in marks.duplicates
    ]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [PolicyError(filename, "", 1, 1, "policy must be a YAML mapping")]
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        for err in e.errors(include_url=False):
            loc = tuple(err["loc"])
            is_key = err["type"] == "extra_forbidden"
            line, col = marks.locate(loc, is_key)
            msg = err["msg"]
            if is_key:
                msg = f"unknown key {loc[-1]!r}"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            errors.append(PolicyError(filename, format_path(loc), line, col, msg))
        return None, errors
    if errors:
        return None, errors
    policy._content_hash = _hash(text)
    policy.__dict__.pop("policy_version", None)  # computed before the hash was known: compute again
    return policy, []


def check_policy_text(text: str, filename: str = "<policy>") -> list[PolicyError]:
    """All problems of a policy text (empty list = valid). For ``tripwire policy check``."""
    return _validate(text, filename)[1]


def parse_policy(text: str, filename: str = "<policy>") -> Policy:
    """Validate a policy text; raise :class:`PolicyInvalid` with located errors."""
    policy, errors = _validate(text, filename)
    if errors or policy is None:
        raise PolicyInvalid(errors)
    return policy


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise :class:`PolicyInvalid` (or OSError)."""
    p = Path(path)
    return parse_policy(p.read_text(encoding="utf-8"), str(p))


#: the shipped default policy: ``deploy/policy/default.yaml`` in a checkout, package data when installed
DEFAULT_POLICY_PATH = shipped_file(*DEFAULT_POLICY_RESOURCE)
