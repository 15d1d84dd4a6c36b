"""A Kafka-protocol broker reachable only over mutual TLS, for tests and benchmarks.

Tansu 0.6 has no usable TLS listener of its own (``--cert`` and ``--key`` exclude each
other), so a real nginx ``stream`` server terminates TLS in front of it and Tansu advertises
nginx's port: every client, after bootstrap, talks TLS. nginx requires a client certificate
signed by the same throwaway CA (``trustme``) as the server certificate.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.security import KafkaSecurity
from streams.ops.procutil import free_port, port_open, spawn_guarded, stop_process, wait_until

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


@dataclass
class TlsKafka:
    tls_bootstrap: str
    plain_bootstrap: str
    pki: dict[str, Path]
    root: Path

    @property
    def url(self) -> str:
        return f"kafka://{self.tls_bootstrap}"

    def env(self, client_cert: bool = True) -> dict[str, str]:
        """``TRIPWIRE_KAFKA__*`` for a worker or CLI command."""
        env = {"TRIPWIRE_KAFKA__SECURITY_PROTOCOL": "SSL", "TRIPWIRE_KAFKA__SSL_CAFILE": str(self.pki["ca"])}
        if client_cert:
            env.update(TRIPWIRE_KAFKA__SSL_CERTFILE=str(self.pki["cert"]),
                       TRIPWIRE_KAFKA__SSL_KEYFILE=str(self.pki["key"]))
        return env

    def security(self, **overrides: Any) -> KafkaSecurity:
        """The working client settings, with ``overrides`` (None removes a field)."""
        kw: dict[str, Any] = {"security_protocol": "SSL", "ssl_cafile": self.pki["ca"],
                              "ssl_certfile": self.pki["cert"], "ssl_keyfile": self.pki["key"]}
        kw.update(overrides)
        return KafkaSecurity(**{k: v for k, v in kw.items() if v is not None})


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _pki(root: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("tripwire-worker")
    pki = {"ca": root / "ca.pem", "server": root / "server.pem", "cert": root / "client.crt",
           "key": root / "client.key", "other_ca": root / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(pki["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(pki["server"]))
    client.cert_chain_pems[0].write_to_path(str(pki["cert"]))
    client.private_key_pem.write_to_path(str(pki["key"]))
    trustme.CA().cert_pem.write_to_path(str(pki["other_ca"]))
    return pki


@contextmanager
def tls_kafka(root: Path, nginx: str, module: Path = STREAM_MODULE) -> Iterator[TlsKafka]:
    """Tansu behind an nginx mutual-TLS terminator; both stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    pki = _pki(root)
    tls_port = free_port()
    broker = EmbeddedBroker(root / "broker", advertised=f"127.0.0.1:{tls_port}")
    broker.start()
    proc = None
    try:
        (root / "logs").mkdir(exist_ok=True)
        (root / "nginx.conf").write_text(f"""
load_module {module};
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log info;
events {{ worker_connections 1024; }}
stream {{
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate     {pki['server']};
        ssl_certificate_key {pki['server']};
        ssl_verify_client on;
        ssl_client_certificate {pki['ca']};
        proxy_pass 127.0.0.1:{broker.port};
    }}
}}
""")
        with open(root / "logs" / "stdout.log", "ab") as fh:
            proc = spawn_guarded([nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=fh, stderr=fh)
        wait_until(lambda: proc.poll() is not None or port_open("127.0.0.1", tls_port), 15,
                   what="the nginx TLS listener")
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {(root / 'logs' / 'error.log').read_text(errors='replace')[-2000:]}")
        yield TlsKafka(f"127.0.0.1:{tls_port}", broker.bootstrap, pki, root)
    finally:
        if proc is not None:
            stop_process(proc)
        broker.stop()
