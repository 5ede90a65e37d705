"""The user-service API handler: its own work per request, and its cold start.

Per request: ``lambda_handler`` on 1,000 API Gateway proxy events per route, in-process,
with clients that answer at once from memory (a users table of realistic items, a
topic, the page-token secret), so that what is timed is the handler's work alone:
routing, validation, marshalling, page tokens, JSON, the log line. Median per route;
the target holds for every route.

Cold start: like ``notifier_init.py``, a fresh interpreter per sample, no bytecode
written, the function and the common layer copied to folders laid out like /var/task
and /opt/python. Unlike there, Powertools is copied into /opt/python too, without its
bytecode, because that is how the Powertools layer ships (the bundler installs it with
``--no-compile``): Lambda compiles it at every cold start. boto3 keeps its bytecode, as
the runtime's own copy does.

- baseline: ``import boto3`` and one ``boto3.resource("dynamodb")``;
- api: ``import api`` and the DynamoDB client its first request creates;
- informational: the same plus Powertools' APIGatewayRestResolver (import and one
  instance), the router the handler would otherwise use.

    .venv/bin/python benchmarks/user_api.py [--samples 21] [--requests 1000]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aws_lambda_powertools  # noqa: E402

from benchmarks.cold_start import alternating, lambda_environment, sandbox, timed  # noqa: E402
from opskit_local.api_gateway import Resource, proxy_event  # noqa: E402
from opskit_local.functions import load_function  # noqa: E402

FUNCTION_DIR = REPO / "opskit" / "functions" / "user_service"
LAYER_DIR = REPO / "opskit" / "layers" / "common" / "python"
POWERTOOLS_DIR = Path(aws_lambda_powertools.__file__).parent
RESOURCES = [Resource("/users"), Resource("/users/{user_id}")]

MAX_REQUEST_MS = 1.0
MAX_INIT_RATIO = 1.5

BASELINE = 'import boto3\nboto3.resource("dynamodb")'
API = 'import api\nfrom opskit_common.clients import client\nclient("dynamodb")'
RESOLVER = (
    f"{API}\nfrom aws_lambda_powertools.event_handler import APIGatewayRestResolver\n"
    "APIGatewayRestResolver()"
)


def user_item(index: int) -> dict[str, Any]:
    user_id = str(uuid.UUID(int=index + 1, version=4))
    return {
        "user_id": {"S": user_id},
        "item_type": {"S": "user"},
        "email": {"S": f"user{index:05}@example.com"},
        "name": {"S": f"User Number {index}"},
        "created_at": {"S": "2026-11-28T13:05:01.123456Z"},
        "created_day": {"S": "2026-11-28"},
        "updated_at": {"S": "2026-11-28T13:05:01.123456Z"},
    }


class InstantDynamoDB:
    """Answers like DynamoDB, from memory, at no cost."""

    def __init__(self) -> None:
        self.items = [user_item(i) for i in range(101)]

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {"Item": self.items[0]}

    def transact_write_items(self, **_: Any) -> dict[str, Any]:
        return {}

    def update_item(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": self.items[0]}

    def scan(self, *, Limit: int, **_: Any) -> dict[str, Any]:
        return {"Items": self.items[:Limit], "LastEvaluatedKey": {"user_id": {"S": "x"}}}

    def query(self, **_: Any) -> dict[str, Any]:
        return {"Items": self.items[:1]}


class InstantSNS:
    def publish(self, **_: Any) -> dict[str, Any]:
        return {"MessageId": "1"}


def request_events() -> dict[str, dict[str, Any]]:
    user_id = str(uuid.UUID(int=1, version=4))

    def event(method: str, target: str, body: bytes = b"") -> dict[str, Any]:
        return proxy_event(
            method=method,
            target=target,
            headers=[("Origin", "https://app.example.com"), ("Content-Type", "application/json")],
            body=body,
            resources=RESOURCES,
            claims={"sub": "caller"},
        )

    return {
        "GET /users (50 users, token)": event("GET", "/users"),
        "GET /users?email=": event("GET", "/users?email=user00000%40example.com"),
        "GET /users/{id}": event("GET", f"/users/{user_id}"),
        "POST /users": event("POST", "/users", b'{"email": "Ada@Example.com", "name": "Ada"}'),
        "PUT /users/{id}": event("PUT", f"/users/{user_id}", b'{"name": "Ada L"}'),
        "POST /users (400)": event("POST", "/users", b'{"email": "nope", "name": ""}'),
    }


def per_request(requests: int) -> dict[str, float]:
    """Median milliseconds of ``lambda_handler`` per route, clients answering instantly."""
    os.environ.update(
        USERS_TABLE="users",
        USER_CREATED_TOPIC="arn:aws:sns:eu-west-1:123456789012:user-created",
        PAGE_TOKEN_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:k",
        ALLOWED_ORIGINS="https://app.example.com",
        AWS_REGION="eu-west-1",
        AWS_DEFAULT_REGION="eu-west-1",
        POWERTOOLS_LOG_LEVEL="INFO",
    )
    sink = io.StringIO()
    with redirect_stdout(sink):  # the log lines are formatted and written, into memory
        api = load_function("user_service", "api")
    clients = {"dynamodb": InstantDynamoDB(), "sns": InstantSNS()}
    api.client = clients.__getitem__
    api.get_secret_string = lambda secret_id: "s" * 48
    medians = {}
    for name, event in request_events().items():
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            with redirect_stdout(sink):
                response = api.lambda_handler(event, None)
            times.append(time.perf_counter() - started)
            sink.seek(0)
            sink.truncate()
        assert response["statusCode"] in (200, 201, 400), (name, response)
        medians[name] = statistics.median(times) * 1000
    return medians


def cold_starts(samples: int) -> dict[str, list[float]]:
    layers = {LAYER_DIR: "", POWERTOOLS_DIR: "aws_lambda_powertools"}
    with sandbox(FUNCTION_DIR, layers) as (task, opt):
        programs = {
            name: timed(init, task, opt)
            for name, init in (("baseline", BASELINE), ("api", API), ("resolver", RESOLVER))
        }
        return alternating(programs, lambda_environment(), samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    medians = per_request(args.requests)
    print(f"handler work per request, median of {args.requests}, instant clients:")
    for name, ms in medians.items():
        print(f"  {name:32} {ms:6.3f} ms")

    times = cold_starts(args.samples)
    baseline, api, resolver = (statistics.median(times[n]) for n in ("baseline", "api", "resolver"))
    ratio = api / baseline
    print(f"cold start, median of {args.samples} fresh interpreters each (alternating):")
    print(f"  baseline boto3 + DynamoDB resource  {baseline * 1000:7.1f} ms")
    print(f"  api import + DynamoDB client        {api * 1000:7.1f} ms  ratio {ratio:.3f}")
    print(
        f"  same + Powertools REST resolver     {resolver * 1000:7.1f} ms  "
        f"ratio {resolver / baseline:.3f}  (informational: the alternative router)"
    )

    worst = max(medians.values())
    figures: list[tuple[str, str, float, bool]] = [
        ("user_api_request_ms", f"{worst:.3f}", MAX_REQUEST_MS, worst <= MAX_REQUEST_MS),
        ("user_api_init_ratio", f"{ratio:.3f}", MAX_INIT_RATIO, ratio <= MAX_INIT_RATIO),
    ]
    for name, figure, target, ok in figures:
        print(f"RESULT {name} {figure} {target} {'ok' if ok else 'missed'}")
    return 0 if all(ok for *_, ok in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
