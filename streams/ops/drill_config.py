"""What a drill targets: the scope under drill and the operator token.

The step SLOs (:class:`streams.settings.DrillSLO`) and topic names (:class:`streams.settings.Topics`)
are the deployment's settings; they are re-exported here for the drill's callers.

>>> drill_scope(None, "ab12cd").agent_scope
'agent:drill-bot-ab12cd'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from breakers.scope import ScopeError, format_scope, parse_scope
from streams.settings import DrillSLO, Topics

DRILL_PREFIX = "drill-"
DEFAULT_SCOPE = "agent:drill-bot/tool:shell"


class DrillError(RuntimeError):
    """The drill cannot start (bad scope, unreachable broker, ...)."""


@dataclass(frozen=True)
class DrillScope:
    """The breaker scope under drill and the identifiers its traffic uses."""

    scope: str
    agent: str
    tool: str
    tenant: str | None
    generated: bool  # the agent id got a fresh per-run suffix

    @property
    def agent_scope(self) -> str:
        return format_scope(self.tenant, self.agent, None)


def drill_scope(explicit: str | None, drill_id: str, prefix: str = DRILL_PREFIX) -> DrillScope:
    """The scope to drill: ``explicit`` as given, else the default with a fresh agent suffix.

    >>> drill_scope(None, "ab12cd").scope
    'agent:drill-bot-ab12cd/tool:shell'
    >>> drill_scope("agent:drill-x/tool:db.write", "z").agent
    'drill-x'
    """
    text = explicit or DEFAULT_SCOPE
    try:
        s = parse_scope(text)
    except ScopeError as exc:
        raise DrillError(f"invalid --scope {text!r}: {exc}") from None
    if s.agent is None or s.tool is None:
        raise DrillError(f"--scope must name an agent and a tool (agent:{prefix}…/tool:…), got {text!r}")
    agent = s.agent if explicit else f"{s.agent}-{drill_id[:6]}"
    if not agent.startswith(prefix):
        raise DrillError(f"refusing to drill {text!r}: drill agent ids must start with {prefix!r} so the "
                         "traffic stays away from production budgets")
    return DrillScope(format_scope(s.tenant, agent, s.tool), agent, s.tool, s.tenant, explicit is None)


def find_token(explicit: str | None, env: dict[str, str], data_dir: Path = Path(".tripwire")) -> str | None:
    """Operator token: ``--token`` > env ``TRIPWIRE_TOKEN`` > ``<data_dir>/admin.token`` (written by ``tripwire up``)."""
    if explicit:
        return explicit.strip()
    if env.get("TRIPWIRE_TOKEN", "").strip():
        return env["TRIPWIRE_TOKEN"].strip()
    path = data_dir / "admin.token"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


__all__ = ["DEFAULT_SCOPE", "DRILL_PREFIX", "DrillError", "DrillSLO", "DrillScope", "Topics", "drill_scope",
           "find_token"]
