"""HTTP on 127.0.0.1 in front of a Lambda handler, the way API Gateway (REST) calls it.

Each request becomes a REST API proxy event (payload format 1.0): the matched resource
template and its path parameters, single- and multi-value headers and query parameters
(decoded as API Gateway decodes them: ``+`` is a space, send ``%2B`` for a plus), the
body (base64 when it is not UTF-8), and a request context whose ``authorizer.claims``
stand in for what API Gateway's Cognito authorizer would pass. As with the authorizer,
a request needs an ``Authorization`` header; its value is not checked, and a request
without one reaches the function without claims (which the user service answers with
401). Resource templates come from the API's OpenAPI document, as API Gateway's would.
"""

from __future__ import annotations

import base64
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from opskit_local.sandboxes import Sandboxes, integration_failure

MAX_REQUEST_BYTES = 10 * 1024 * 1024
"""API Gateway's own payload limit; larger requests never reach the function."""


def local_claims(
    *, sub: str = "00000000-0000-4000-8000-000000000001", email: str = "developer@example.com"
) -> dict[str, str]:
    """Cognito ID-token claims as the authorizer passes them (every value a string)."""
    return {
        "sub": sub,
        "email": email,
        "email_verified": "true",
        "cognito:username": sub,
        "token_use": "id",
        "iss": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_local",
        "aud": "local-app-client",
    }


@dataclass(frozen=True)
class Resource:
    """One resource template, e.g. ``/users/{user_id}``."""

    template: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [
            f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
            for part in self.template.strip("/").split("/")
        ]
        object.__setattr__(self, "pattern", re.compile("^/" + "/".join(parts) + "/?$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}


def resources_from_openapi(document: Mapping[str, Any]) -> list[Resource]:
    return [Resource(template) for template in document.get("paths", {})]


def _multi(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]] | None:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped or None


def proxy_event(
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    resources: Iterable[Resource],
    claims: Mapping[str, str] | None,
    stage: str = "local",
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The proxy event API Gateway would send for this request."""
    url = urlsplit(target)
    path = url.path or "/"
    resource, path_parameters = path, None
    for candidate in resources:
        parameters = candidate.match(path)
        if parameters is not None:
            resource, path_parameters = candidate.template, parameters or None
            break
    query = parse_qsl(url.query, keep_blank_values=True)
    header_pairs = list(headers)
    multi_headers = _multi(header_pairs)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    request_id = str(uuid.uuid4())
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method.upper(),
        "headers": {key: values[-1] for key, values in (multi_headers or {}).items()} or None,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": dict(query) or None,
        "multiValueQueryStringParameters": _multi(query),
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method.upper(),
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip},
            "authorizer": {"claims": dict(claims)} if claims is not None else None,
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    """Bursts of concurrent connections queue up instead of being reset (default: 5)."""


def _proxy_response(result: Any) -> bool:
    """Whether API Gateway would accept ``result`` from a proxy integration: a map with a
    status code; anything else it answers with 502."""
    if not isinstance(result, dict) or not isinstance(result.get("headers") or {}, dict):
        return False
    status = result.get("statusCode")
    return isinstance(status, int | str) and str(status).isdigit() and 100 <= int(status) <= 599


class ApiServer:
    """Serves a handler over HTTP on 127.0.0.1, a thread per connection, into ``sandboxes``."""

    def __init__(
        self,
        sandboxes: Sandboxes,
        *,
        resources: Iterable[Resource],
        claims: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.sandboxes = sandboxes
        self.resources = list(resources)
        self.claims = dict(claims) if claims is not None else local_claims()
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_REQUEST_BYTES:
                    self.close_connection = True  # the unread body must not become a request
                    self._send(
                        413,
                        {"Content-Type": "application/json", "Connection": "close"},
                        b'{"message":"too large"}',
                    )
                    return
                body = self.rfile.read(length) if length else b""
                signed_in = bool(self.headers.get("Authorization", "").strip())
                event = proxy_event(
                    method=self.command,
                    target=self.path,
                    headers=self.headers.items(),
                    body=body,
                    resources=server.resources,
                    claims=server.claims if signed_in else None,
                )
                result = server.sandboxes.invoke(event)
                if not _proxy_response(result):
                    print(f"Malformed Lambda proxy response: {result!r:.200}", file=sys.stderr)
                    result = integration_failure()
                payload = result.get("body") or ""
                data = (
                    base64.b64decode(payload)
                    if result.get("isBase64Encoded")
                    else str(payload).encode("utf-8")
                )
                headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
                self._send(int(result["statusCode"]), headers, data)

            def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_"):  # every method goes to the function, as in API Gateway
                    return self._serve
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the handler logs every request itself."""

        self._httpd = _Server(("127.0.0.1", port), RequestHandler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ApiServer:
        """Serves from a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.sandboxes.close()
