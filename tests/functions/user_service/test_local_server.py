"""Specification of `make api` (python -m opskit_local.user_service) and its adapter.

The first test runs the command as `make api` does, in a process of its own, and talks
to it over HTTP; the others pin down how HTTP requests become API Gateway proxy events.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from opskit_local.api_gateway import ApiServer, Resource, proxy_event
from opskit_local.sandboxes import InProcess

REPO = Path(__file__).resolve().parents[3]
RESOURCES = [Resource("/users"), Resource("/users/{user_id}")]


@pytest.fixture
def make_api() -> Iterator[tuple[subprocess.Popen[str], str]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "opskit_local.user_service", "--port", "0"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stdout = process.stdout
    assert stdout is not None
    url = ""
    for line in stdout:
        found = re.match(r"user-service API on (http://127\.0\.0\.1:\d+) ", line)
        if found:
            url = found.group(1)
            break

    def drain() -> None:
        """The server logs every request; read on, so a full pipe never blocks it, and
        close the pipe at its end (left to the garbage collector: a ResourceWarning)."""
        with stdout:
            stdout.read()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert url, "the server did not say where it listens"
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        reader.join(timeout=60)


def test_make_api_serves_the_api_without_aws(make_api: tuple[subprocess.Popen[str], str]) -> None:
    process, url = make_api
    signed_in = {"Authorization": "Bearer anything"}

    # WHEN a user is created and listed, as in the README's curl examples
    created = requests.post(
        f"{url}/users",
        json={"email": "ada@example.com", "name": "Ada Lovelace"},
        headers=signed_in,
        timeout=30,
    )
    listed = requests.get(f"{url}/users", headers=signed_in, timeout=30)
    anonymous = requests.get(f"{url}/users", timeout=30)

    # THEN the emulated AWS behind it stored the user, and the authorizer stand-in held
    assert created.status_code == 201
    assert listed.json()["users"] == [created.json()["user"]]
    assert anonymous.status_code == 401
    # AND Ctrl-C stops it cleanly
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0


def test_a_body_over_api_gateways_10_mb_is_413_and_ends_the_connection(
    make_api: tuple[subprocess.Popen[str], str],
) -> None:
    _, url = make_api
    host, port = url.removeprefix("http://").split(":")
    limit = 10 * 1024 * 1024

    def answer(length: int, body: bytes, *headers: bytes) -> bytes:
        """Everything the server sends until it closes the connection."""
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(
                b"POST /users HTTP/1.1\r\nHost: local\r\nAuthorization: Bearer a\r\n"
                + b"".join(header + b"\r\n" for header in headers)
                + f"Content-Length: {length}\r\n\r\n".encode()
                + body
            )
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
            return received

    refused = answer(limit + 1, b"{}")
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert refused.endswith(b'\r\n\r\n{"message":"too large"}'), "closed, and nothing more"
    served = answer(limit, b" " * limit, b"Connection: close")
    assert b'{"message":"too large"}' not in served
    assert b"the limit is 10240" in served, "the function answered, with its own limit"


@pytest.mark.parametrize(
    "response",
    [
        {"body": "no status"},
        {"statusCode": "abc"},
        {"statusCode": 700},
        {"statusCode": 200, "headers": ["X-Not", "a map"]},
        ["not", "a map"],
        None,
    ],
)
def test_a_malformed_proxy_response_is_502_as_api_gateway_answers_it(response: Any) -> None:
    server = ApiServer(InProcess(lambda event, context: response), resources=RESOURCES).start()
    try:
        answer = requests.get(f"{server.url}/users", timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 502
    assert answer.json() == {"message": "Internal server error"}


def test_a_request_becomes_the_proxy_event_api_gateway_would_send() -> None:
    before = time.time()
    event = proxy_event(
        method="put",
        target="/users/abc%2Fdef?limit=5&email=a+b%2Bc%40x.com&limit=6&empty=",
        headers=[("Content-Type", "application/json"), ("X-Multi", "1"), ("X-Multi", "2")],
        body=b'{"name": "A"}',
        resources=RESOURCES,
        claims={"sub": "caller"},
        stage="dev",
    )

    assert (event["httpMethod"], event["resource"], event["path"]) == (
        "PUT",
        "/users/{user_id}",
        "/users/abc%2Fdef",
    )
    assert event["pathParameters"] == {"user_id": "abc/def"}
    assert event["multiValueQueryStringParameters"] == {
        "limit": ["5", "6"],
        "email": ["a b+c@x.com"],
        "empty": [""],
    }
    assert event["queryStringParameters"] == {"limit": "6", "email": "a b+c@x.com", "empty": ""}
    assert event["headers"]["X-Multi"] == "2"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"name": "A"}', False)
    context = event["requestContext"]
    assert context["authorizer"] == {"claims": {"sub": "caller"}}
    assert (context["stage"], context["path"], context["resourcePath"]) == (
        "dev",
        "/dev/users/abc%2Fdef",
        "/users/{user_id}",
    )
    assert re.match(r"^[0-9a-f-]{36}$", context["requestId"])
    assert int(before * 1000) <= context["requestTimeEpoch"] <= time.time() * 1000
    assert context["httpMethod"] == "PUT"


def test_bodies_that_are_not_utf8_arrive_base64_encoded_and_absent_parts_as_null() -> None:
    binary = proxy_event(
        method="POST",
        target="/users",
        headers=[],
        body=b"\xff\x00",
        resources=RESOURCES,
        claims=None,
    )
    empty = proxy_event(
        method="GET", target="/other", headers=[], body=b"", resources=RESOURCES, claims=None
    )

    assert (binary["body"], binary["isBase64Encoded"]) == (
        base64.b64encode(b"\xff\x00").decode(),
        True,
    )
    assert binary["requestContext"]["authorizer"] is None
    assert (empty["resource"], empty["pathParameters"], empty["body"]) == ("/other", None, None)
    assert empty["queryStringParameters"] is None and empty["headers"] is None
    json.dumps(binary)  # an event is plain JSON, as Lambda receives it
