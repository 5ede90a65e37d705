"""Stand-ins for webhook receivers: a real HTTP(S) server on 127.0.0.1, and a wait recorder."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_HUNG_UP = (ConnectionError, ssl.SSLEOFError)
"""What writing to a client that gave up raises, over plain HTTP and over TLS."""


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    """One scripted answer of the webhook server."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    trickle: float = 0.0
    """Seconds between single bytes of the body (or of the whole answer, with trickle_headers)."""
    trickle_headers: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookServer:
    """A local stand-in for Slack/Teams that records requests and answers from a script.

    Scripted replies are used in order; after that, ``default`` answers every request.
    Its URL carries a random token in the path, like a real webhook URL does. With
    ``tls`` (a server-side context) it speaks HTTPS.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.default = Reply()
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.token = f"T0KEN{uuid.uuid4().hex}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Received("POST", self.path, dict(self.headers.items()), body)
                    )
                    reply = server._script.popleft() if server._script else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.trickle:
                    self._trickle(reply)
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except _HUNG_UP:
                    pass  # the client gave up waiting (timeout tests)

            def _trickle(self, reply: Reply) -> None:
                """Like a server that keeps the connection busy: one byte at a time."""
                self.close_connection = True
                head = (
                    f"HTTP/1.1 {reply.status} Trickle\r\nContent-Length: {len(reply.body)}\r\n\r\n"
                ).encode()
                try:
                    if not reply.trickle_headers:
                        self.wfile.write(head)
                        head = b""
                    for byte in head + reply.body:
                        time.sleep(reply.trickle)
                        self.wfile.write(bytes([byte]))
                except _HUNG_UP:
                    pass  # the client hung up

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: the default access log would print the secret URL path."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "http" if tls is None else "https"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        return (
            f"{self._scheme}://127.0.0.1:{self._httpd.server_port}/services/T000/B000/{self.token}"
        )

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Sleeps(list[float]):
    """Records requested waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate valid for the next hour; self-signed unless `issuer` (name, key)."""
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _server_context(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> ssl.SSLContext:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server.load_cert_chain(cert_file, key_file)
    return server


_LOOPBACK_NAME = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


def self_signed_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        "127.0.0.1",
        key,
        extensions=[
            (_LOOPBACK_NAME, False),
            (x509.BasicConstraints(ca=True, path_length=None), True),
        ],
    )
    client = ssl.create_default_context(
        cadata=cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return _server_context(cert, key), client


_KEY_USAGE_OF_A_CA = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def ca_signed_tls(*, ca_key_usage: bool = True) -> tuple[ssl.SSLContext, bytes]:
    """A server context for 127.0.0.1 whose certificate a fresh CA signed, and that CA's PEM.
    Every extension RFC 5280 asks for is there, except the CA's key usage when not
    `ca_key_usage`: what Python's strict X.509 checks (3.13 on) refuse."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ]
    if ca_key_usage:
        ca_extensions.append((_KEY_USAGE_OF_A_CA, True))
    ca = _certificate("opskit test CA", ca_key, extensions=ca_extensions)
    cert = _certificate(
        "127.0.0.1",
        key,
        issuer=("opskit test CA", ca_key),
        extensions=[
            (_LOOPBACK_NAME, False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    return _server_context(cert, key), ca.public_bytes(serialization.Encoding.PEM)
