"""What the emulator has no stand-in for, served on 127.0.0.1: a webhook, Lambda, CodeDeploy.

- `WebhookStandIn`: a Slack/Teams incoming webhook that accepts every message (200) and
  reports it; the deployment notifier's webhook secret holds its URL.
- `LambdaStandIn`: Lambda's Invoke, which runs the named function locally, and CodeDeploy's
  PutLifecycleEventHookExecutionStatus, which records the verdict. moto runs no Lambda
  code without Docker and has no lifecycle hooks; the smoke test needs both. Handlers
  reach it through ``AWS_ENDPOINT_URL_LAMBDA`` and ``AWS_ENDPOINT_URL_CODEDEPLOY``.
  One request at a time: a function it runs cannot invoke another through it.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:  # imported where a server is made: `make invoke` beside `make local` makes none
    from http.server import BaseHTTPRequestHandler, HTTPServer

Report = Callable[[str], None]

_INVOKE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations$")
_HOOK_STATUS = "CodeDeploy_20141006.PutLifecycleEventHookExecutionStatus"
MAX_SHOWN = 300
"""Characters of a received message shown in a report line."""


@dataclass(frozen=True)
class Invoked:
    """What a local invocation gave the Lambda stand-in to answer with."""

    payload: bytes
    function_error: str | None
    executed_version: str = "$LATEST"


Invoke = Callable[[str, str | None, bytes], Invoked]
"""(function name or ARN, qualifier, payload) -> Invoked; LookupError: no such function."""


class _Server:
    def __init__(self, server: HTTPServer) -> None:
        self._httpd = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class WebhookStandIn(_Server):
    """Accepts every POST like a Slack or Teams webhook; `received` keeps the JSON bodies."""

    PATH = "/services/local/opskit-webhook"

    def __init__(self, *, report: Report, port: int = 0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[Any] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    stand_in.received.append(json.loads(body))
                except ValueError:
                    stand_in.received.append(body.decode("utf-8", "replace"))
                shown = body.decode("utf-8", "replace")
                report(f"webhook received {len(body)} bytes: {shown[:MAX_SHOWN]}")
                _reply(self, 200, b"ok", Content_Type="text/plain")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: each message is reported once, above."""

        super().__init__(ThreadingHTTPServer(("127.0.0.1", port), Handler))

    @property
    def url(self) -> str:
        return self.base_url + self.PATH


class LambdaStandIn(_Server):
    """Lambda Invoke (runs the function through `invoke`) and CodeDeploy hook verdicts."""

    def __init__(self, invoke: Invoke, *, report: Report, port: int = 0) -> None:
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.hook_statuses: list[dict[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                found = _INVOKE.match(url.path)
                if found is not None:
                    self._invoke(unquote(found[1]), parse_qs(url.query), body)
                elif self.headers.get("X-Amz-Target") == _HOOK_STATUS:
                    self._hook_status(json.loads(body or b"{}"))
                else:
                    message = {"__type": "UnknownOperationException", "message": self.path}
                    _reply(self, 400, json.dumps(message).encode())

            def _invoke(self, name: str, query: dict[str, list[str]], payload: bytes) -> None:
                qualifier = next(iter(query.get("Qualifier", [])), None)
                kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
                try:
                    if kind == "DryRun":
                        invoke(name, qualifier, b"")  # only looks the function up
                        _reply(self, 204, b"")
                        return
                    invoked = invoke(name, qualifier, payload)
                except LookupError as error:
                    message = {"Type": "User", "message": str(error).strip("'\"")}
                    _reply(
                        self,
                        404,
                        json.dumps(message).encode(),
                        x_amzn_ErrorType="ResourceNotFoundException",
                    )
                    return
                except ValueError:
                    message = {"Type": "User", "message": "Could not parse request body into json"}
                    _reply(
                        self,
                        400,
                        json.dumps(message).encode(),
                        x_amzn_ErrorType="InvalidRequestContentException",
                    )
                    return
                headers = {"X_Amz_Executed_Version": invoked.executed_version}
                if invoked.function_error:
                    headers["X_Amz_Function_Error"] = invoked.function_error
                status = 202 if kind == "Event" else 200
                _reply(self, status, b"" if kind == "Event" else invoked.payload, **headers)

            def _hook_status(self, request: dict[str, str]) -> None:
                stand_in.hook_statuses.append(request)
                report(
                    f"codedeploy: {request.get('status')} reported for hook"
                    f" {request.get('lifecycleEventHookExecutionId')} of deployment"
                    f" {request.get('deploymentId')}"
                )
                answer = {
                    "lifecycleEventHookExecutionId": request.get("lifecycleEventHookExecutionId")
                }
                _reply(
                    self,
                    200,
                    json.dumps(answer).encode(),
                    Content_Type="application/x-amz-json-1.1",
                )

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: invocations print their own START, END and REPORT lines."""

        super().__init__(HTTPServer(("127.0.0.1", port), Handler))
