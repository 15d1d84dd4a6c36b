"""Builders shared by the end-to-end tests: live trace events, operator tokens, tiny HTTP
servers (tool backend, Alertmanager webhook receiver) and real nginx / Alertmanager processes.

Everything binds to 127.0.0.1 on free ports and writes its logs under the test's tmp dir.
"""

from __future__ import annotations

import http.server
import itertools
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from breakers.operators import generate_token, hash_token
from streams.ops.procutil import free_port, spawn_guarded, stop_process
from helpers.support import REPO, wait_for

GATEWAY_CONF = REPO / "deploy" / "nginx" / "tool-gateway.conf"
_ids = itertools.count()


# ------------------------------------------------------------------ trace events
def event(agent: str, kind: str, ts: float | None = None, **fields: Any) -> dict[str, Any]:
    """A schema-v1 event at wall-clock time ``ts`` (default now), epoch ms."""
    ev: dict[str, Any] = {"schema_version": "1", "event_id": f"e2e-{uuid.uuid4().hex[:12]}-{next(_ids)}",
                          "ts": int((time.time() if ts is None else ts) * 1000), "agent_id": agent, "kind": kind}
    ev.update(fields)
    return ev


def calls(agent: str, n: int, tool: str = "search") -> list[dict[str, Any]]:
    return [event(agent, "tool_call", tool=tool, status="ok") for _ in range(n)]


def flags(agent: str, n: int, severity: str = "high", tool: str = "search") -> list[dict[str, Any]]:
    return [event(agent, "monitor_flag", tool=tool, severity=severity, monitor="guard", action="blocked")
            for _ in range(n)]


def incidents(agent: str, n: int, severity: str = "critical") -> list[dict[str, Any]]:
    return [event(agent, "incident", severity=severity) for _ in range(n)]


def send_batched(producer: Any, agent: str, events: list[dict[str, Any]], batch: int = 50) -> None:
    """One Kafka message per ``batch`` events (key = agent), then flush."""
    for i in range(0, len(events), batch):
        producer.send_batch(agent, events[i:i + batch])
    producer.flush()


# ------------------------------------------------------------------ operators
@dataclass
class Tokens:
    """One freshly generated token per role; ``env`` configures a worker with their hashes."""

    viewer: str = field(default_factory=generate_token)
    operator: str = field(default_factory=generate_token)
    admin: str = field(default_factory=generate_token)

    def env(self) -> dict[str, str]:
        entries = [{"name": f"e2e-{role}", "role": role, "token_sha256": hash_token(getattr(self, role))}
                   for role in ("viewer", "operator", "admin")]
        return {"TRIPWIRE_OPERATORS": json.dumps(entries)}

    def all(self) -> list[str]:
        return [self.viewer, self.operator, self.admin]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scope_url(web: str, scope: str, action: str | None = None) -> str:
    url = f"{web}/v1/breakers/{quote(scope, safe='')}"
    return f"{url}/{action}" if action else url


def breaker(web: str, scope: str, token: str | None = None) -> dict[str, Any]:
    r = httpx.get(scope_url(web, scope), headers=bearer(token) if token else {}, timeout=5)
    r.raise_for_status()
    return r.json()


# ------------------------------------------------------------------ tiny HTTP servers
class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[http.server.ThreadingHTTPServer]:
    """Run ``handler`` on a free loopback port in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="e2e-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class ToolBackend(_Quiet):
    """The protected tool: answers 200 with what it was called with."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = orjson.dumps({"tool_backend": True, "path": self.path, "agent": self.headers.get("X-Agent-Id")})
        self._send(200, body)

    do_POST = do_GET


class WebhookSink(_Quiet):
    """Alertmanager webhook receiver: stores every POSTed notification on the server object."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        n = int(self.headers.get("Content-Length") or 0)
        doc = json.loads(self.rfile.read(n) or b"{}")
        store: list[tuple[float, dict[str, Any]]] = self.server.received  # type: ignore[attr-defined]
        store.append((time.time(), doc))
        self._send(200, b"{}")


# ------------------------------------------------------------------ nginx
@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path

    def error_log(self) -> str:
        try:
            return (self.root / "logs" / "error.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no error log)"


def render_gateway(listen: int, authz_port: int, backend_port: int) -> str:
    """deploy/nginx/tool-gateway.conf with the test's ports substituted (fails if a port moved)."""
    text = GATEWAY_CONF.read_text()
    for old, new in (("listen 8080;", f"listen 127.0.0.1:{listen};"),
                     ("server 127.0.0.1:6066", f"server 127.0.0.1:{authz_port}"),
                     ("server 127.0.0.1:9000", f"server 127.0.0.1:{backend_port}")):
        assert text.count(old) == 1, f"{GATEWAY_CONF} no longer contains exactly one {old!r}"
        text = text.replace(old, new)
    return text


def start_nginx(binary: str, root: Path, authz_port: int, backend_port: int) -> Nginx:
    """Real nginx in the foreground with a main config that includes the rendered gateway snippet."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    port = free_port()
    (root / "gateway.conf").write_text(render_gateway(port, authz_port, backend_port))
    tmp = root / "tmp"
    (root / "nginx.conf").write_text(f"""
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {root}/gateway.conf;
}}
""")
    with open(root / "logs" / "stdout.log", "ab") as fh:
        proc = spawn_guarded([binary, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
                             stdout=fh, stderr=fh)
    ngx = Nginx(proc, f"http://127.0.0.1:{port}", root)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {ngx.error_log()}")
        httpx.get(f"{ngx.url}/", timeout=1)
        return True

    wait_for(up, 15, "nginx listening")
    return ngx


# ------------------------------------------------------------------ Alertmanager
@dataclass
class AlertmanagerProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def alerts(self, **label_filter: str) -> list[dict[str, Any]]:
        params = [("filter", f'{k}="{v}"') for k, v in label_filter.items()]
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=5)
        r.raise_for_status()
        return r.json()


def start_alertmanager(binary: str, root: Path, webhook_url: str) -> AlertmanagerProc:
    """Real Alertmanager routing every alert to ``webhook_url`` (fast grouping, resolved sent)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "am.yml").write_text(f"""
route:
  receiver: e2e-webhook
  group_by: [alertname, scope]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: e2e-webhook
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
""")
    port = free_port()
    log = root / "am.log"
    with open(log, "ab") as fh:
        proc = spawn_guarded([binary, f"--config.file={root / 'am.yml'}", f"--storage.path={root / 'data'}",
                              f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                             stdout=fh, stderr=fh)
    am = AlertmanagerProc(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {log.read_text(errors='replace')[-2000:]}")
        return httpx.get(f"{am.url}/-/ready", timeout=1).status_code == 200

    wait_for(ready, 30, "alertmanager /-/ready")
    return am


__all__ = ["AlertmanagerProc", "Nginx", "Tokens", "ToolBackend", "WebhookSink", "bearer", "breaker", "calls",
           "event", "flags", "incidents", "render_gateway", "scope_url", "send_batched", "serve",
           "start_alertmanager", "start_nginx", "stop_process"]
