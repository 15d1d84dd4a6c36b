"""Fail fast, and say why, when a Kafka client configuration cannot work.

kafka-python and aiokafka answer most misconfigurations (TLS towards a plaintext
listener, an untrusted certificate, a missing client certificate, an unoffered SASL
mechanism) with retries and, 30 s later, ``Unable to bootstrap``. :func:`probe` opens
one connection per bootstrap address the way the client would and names the step
that failed: TCP connect, TLS handshake, a Kafka ``ApiVersions`` round trip, the
SASL mechanism offer (``SaslHandshake``), or an unauthenticated ``Metadata`` request
on a listener that wants SASL. It never sends a password: the credentials themselves
are checked by the client that follows.

>>> try:
...     probe("127.0.0.1:1", KafkaSecurity(), timeout_s=0.5)
... except KafkaProbeError as exc:
...     print(exc)
127.0.0.1:1: TCP connect failed (ConnectionRefusedError: [Errno 111] Connection refused)
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from streams.kafka.security import KafkaSecurity

API_VERSIONS, METADATA, SASL_HANDSHAKE = 18, 3, 17
UNSUPPORTED_SASL_MECHANISM = 33


class KafkaProbeError(ConnectionError):
    """No bootstrap address could be used; the message names each address and the failed step."""


def _request(api_key: int, version: int, correlation_id: int, body: bytes = b"") -> bytes:
    client_id = b"tripwire-probe"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(header) + len(body)) + header + body


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _roundtrip(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes = b"") -> bytes:
    """Send one request and return the response body (after the correlation id)."""
    sock.sendall(_request(api_key, version, correlation_id, body))
    head = _read_exact(sock, 4)
    if head[:1] == b"\x15" and head[1:2] == b"\x03":
        raise _TlsAlert
    (size,) = struct.unpack(">i", head)
    if not 4 <= size <= 16 * 1024 * 1024:
        raise _NotKafka(f"{size} byte frame")
    payload = _read_exact(sock, size)
    if struct.unpack(">i", payload[:4])[0] != correlation_id:
        raise _NotKafka("correlation id mismatch")
    return payload[4:]


class _TlsAlert(Exception):
    pass


class _NotKafka(Exception):
    pass


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _mechanisms(body: bytes) -> tuple[int, list[str]]:
    (error,), rest = struct.unpack(">h", body[:2]), body[2:]
    (count,), rest = struct.unpack(">i", rest[:4]), rest[4:]
    names = []
    for _ in range(max(count, 0)):
        (n,), rest = struct.unpack(">h", rest[:2]), rest[2:]
        names.append(rest[:n].decode(errors="replace"))
        rest = rest[n:]
    return error, names


def _probe_one(host: str, port: int, security: KafkaSecurity, timeout_s: float) -> None:
    addr = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise KafkaProbeError(f"{addr}: TCP connect failed ({type(exc).__name__}: {exc})") from None
    sock: socket.socket = raw
    try:
        if security.tls:
            ctx = security.ssl_context
            assert ctx is not None
            try:
                sock = ctx.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                hint = ("set ssl_check_hostname: false only if the certificate cannot name this host"
                        if "hostname" in str(exc.verify_message).lower()
                        else "set ssl_cafile to the CA that signed the broker certificate")
                raise KafkaProbeError(f"{addr}: the broker's TLS certificate was rejected "
                                      f"({exc.verify_message}); {hint}") from None
            except (TimeoutError, socket.timeout):
                raise KafkaProbeError(f"{addr}: no TLS handshake answer within {timeout_s:g}s: is this a plaintext "
                                      f"listener? (security_protocol is {security.security_protocol})") from None
            except ssl.SSLError as exc:
                raise KafkaProbeError(f"{addr}: TLS handshake failed ({exc.reason or exc}); is this a TLS "
                                      f"listener? (security_protocol is {security.security_protocol})") from None
            except (OSError, EOFError) as exc:
                raise KafkaProbeError(f"{addr}: the connection closed during the TLS handshake ({exc}); "
                                      "is this a TLS listener?") from None
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        step = "ApiVersions"
        try:
            _roundtrip(sock, API_VERSIONS, 0, 1)
            if security.sasl:
                step = "SaslHandshake"
                error, offered = _mechanisms(_roundtrip(sock, SASL_HANDSHAKE, 1, 2,
                                                        _string(str(security.sasl_mechanism))))
                if security.sasl_mechanism not in offered and (error == UNSUPPORTED_SASL_MECHANISM or offered):
                    raise KafkaProbeError(f"{addr}: the broker does not offer SASL {security.sasl_mechanism} "
                                          f"(it offers {', '.join(offered) or 'none'}); set sasl_mechanism")
                if error:
                    raise KafkaProbeError(f"{addr}: the broker refused the SASL handshake (Kafka error {error}); "
                                          "is SASL enabled on this listener?")
            else:
                step = "Metadata"
                _roundtrip(sock, METADATA, 0, 2, struct.pack(">i", 0))
        except _TlsAlert:
            raise KafkaProbeError(f"{addr}: the broker answered with a TLS alert: it is a TLS listener; "
                                  "use security_protocol SSL or SASL_SSL") from None
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if "CERTIFICATE_REQUIRED" in reason.upper():
                raise KafkaProbeError(f"{addr}: the broker requires a client certificate (mutual TLS); "
                                      "set ssl_certfile and ssl_keyfile") from None
            raise KafkaProbeError(f"{addr}: TLS error after the handshake ({reason})") from None
        except (EOFError, ConnectionResetError, BrokenPipeError):
            if step == "SaslHandshake":
                raise KafkaProbeError(f"{addr}: the broker closed the connection on a SASL handshake for "
                                      f"{security.sasl_mechanism}: it probably does not offer that mechanism "
                                      "(try SCRAM-SHA-512 / SCRAM-SHA-256 / PLAIN)") from None
            if step == "Metadata":
                raise KafkaProbeError(f"{addr}: the broker closed the connection on an unauthenticated request: "
                                      f"it probably requires SASL (security_protocol is "
                                      f"{security.security_protocol}; use SASL_SSL or SASL_PLAINTEXT)") from None
            hint = ("it may require a client certificate (ssl_certfile/ssl_keyfile)" if security.tls
                    else "is it a TLS listener? (security_protocol is PLAINTEXT)")
            raise KafkaProbeError(f"{addr}: the connection closed before a Kafka {step} answer; {hint}") from None
        except (TimeoutError, socket.timeout):
            raise KafkaProbeError(f"{addr}: no Kafka {step} answer within {timeout_s:g}s") from None
        except _NotKafka as exc:
            raise KafkaProbeError(f"{addr}: the answer is not Kafka ({exc})") from None
    finally:
        sock.close()


def probe(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> None:
    """Return when one bootstrap address speaks Kafka under ``security``; else raise :class:`KafkaProbeError`.

    ``bootstrap`` is ``host:port[,host:port]``. Certificate files are loaded first, so
    a bad file raises :class:`streams.kafka.security.KafkaSecurityError`.
    """
    errors = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit():
            errors.append(f"{entry.strip()}: not host:port")
            continue
        try:
            _probe_one(host.strip("[]"), int(port), security, timeout_s)
            return
        except KafkaProbeError as exc:
            errors.append(str(exc))
    raise KafkaProbeError("; ".join(errors) or "no bootstrap address")
