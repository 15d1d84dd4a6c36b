"""The worker's HTTP routes (faust views), adapting :class:`streams.worker.http.api.Api` and friends.

Every handler is a thin adapter: the logic lives in ``streams.worker.http.api`` (authz, introspection,
operator actions) and in the objects of :class:`streams.worker.context.AppContext`.
"""

from __future__ import annotations

import time

from faust.web import Request, Response, View

from streams.worker.context import AppContext
from streams.worker.http.api import Reply

#: the request headers that name who calls what; each must appear at most once
IDENTITY_HEADERS = ("X-Agent-Id", "X-Tool", "X-Tenant")


def _reply(view: View, r: Reply) -> Response:
    return view.json(r.body, status=r.status, headers=r.headers)


def register(ctx: AppContext) -> None:
    """Add /metrics, /healthz, /readyz, /v1/status, /v1/authz, /v1/introspect and /v1/breakers."""
    app, api, metrics, monitor, pipeline, readiness = (ctx.app, ctx.api, ctx.metrics, ctx.monitor, ctx.pipeline,
                                                       ctx.readiness)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "time": time.time()})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            ready, why = readiness.check()
            return self.json({"ready": ready, "reason": why}, status=200 if ready else 503)

    @app.page("/v1/status")
    class Status(View):
        """Cheap JSON progress for people and scripts (``tripwire up``, benchmarks)."""

        async def get(self, request: Request) -> Response:
            c = pipeline.counters
            states: dict[str, int] = {}
            for st in monitor.states.values():
                states[st.state] = states.get(st.state, 0) + 1
            ready, why = readiness.check()
            return self.json({"ready": ready, "reason": why, "events": sum(c.events.values()),
                              "rejected": sum(c.rejected.values()), "duplicates": c.duplicates,
                              "messages": c.messages, "agents": len(monitor.agents), "breakers": states,
                              "policy_version": monitor.policy.policy_version})

    @app.page("/v1/authz")
    class Authz(View):
        async def get(self, request: Request) -> Response:
            h = request.headers
            doubled = [name for name in IDENTITY_HEADERS if len(h.getall(name, ())) > 1]
            if doubled:  # which copy would a gateway have meant? refuse rather than guess (counted: bad_request)
                return _reply(self, api.authz_bad_request(f"duplicate {', '.join(doubled)} header"))
            return _reply(self, await api.authz(h.get("X-Agent-Id"), h.get("X-Tool"), h.get("X-Tenant")))

        async def post(self, request: Request) -> Response:
            return await self.get(request)

    @app.page("/v1/introspect")
    class Introspect(View):
        async def post(self, request: Request) -> Response:
            body = await request.read()  # type: ignore[attr-defined]
            return _reply(self, await api.introspect(body, request.headers.get("Content-Type", ""),
                                                     request.headers.get("Authorization")))

    @app.page("/v1/breakers")
    class Breakers(View):
        async def get(self, request: Request) -> Response:
            return _reply(self, await api.list_breakers(request.headers.get("Authorization"),
                                                        request.query.get("state")))

    # ``scope`` arrives percent-decoded ONCE by the router (aiohttp decodes the path, %2F too): the API
    # takes it verbatim (no second unquote), so `tripwire breakers force-open 'agent:bot%41'` opens agent:bot%41.
    @app.page("/v1/breakers/{scope:.+}/{action:(force-open|reset|approve)}")
    class BreakerAction(View):
        async def post(self, request: Request, scope: str, action: str) -> Response:
            body = await request.content.read(64 * 1024 + 1)  # type: ignore[attr-defined]
            return _reply(self, await api.action(request.headers.get("Authorization"), scope, action, body))

    @app.page("/v1/breakers/{scope:.+}")
    class BreakerShow(View):
        async def get(self, request: Request, scope: str) -> Response:
            return _reply(self, await api.show_breaker(request.headers.get("Authorization"), scope))

