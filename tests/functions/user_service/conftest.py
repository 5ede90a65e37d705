"""Fixtures for the user-service tests: its resources on moto, and its API over HTTP.

The API runs as `make api` runs it: `opskit_local`'s API Gateway adapter on 127.0.0.1
in front of `api.lambda_handler`, the handler reaching moto's server through
AWS_ENDPOINT_URL. The topic, events queue and page-token secret are made once per
module; every test gets a users table of its own.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import requests

from opskit_local.api_gateway import ApiServer
from opskit_local.emulator import apply_fidelity_fixes
from opskit_local.functions import load_function
from opskit_local.user_service import (
    UserServiceResources,
    api_server,
    create_resources,
    users_table_definition,
)
from tests.functions.conftest import REGION

ORIGIN = "https://app.example.com"
AUTH = {"Authorization": "Bearer local-stand-in"}
"""Any value passes the local authorizer stand-in; none gets 401."""

Clients = Callable[[str], Any]


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> Clients:
    """Test-side clients of the session's moto server, made DynamoDB-faithful."""
    apply_fidelity_fixes()

    def make(service_name: str) -> Any:
        return boto3.client(
            service_name,
            region_name=REGION,
            endpoint_url=moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    return make


@pytest.fixture(scope="module")
def shared_resources(aws: Clients) -> UserServiceResources:
    return create_resources(aws, prefix=f"m{uuid.uuid4().hex[:10]}", allowed_origins=[ORIGIN])


@pytest.fixture
def resources(
    aws: Clients,
    shared_resources: UserServiceResources,
    aws_environment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> UserServiceResources:
    """The module's topic, queue and secret, a users table of this test's own."""
    table_name = f"users-{uuid.uuid4().hex[:12]}"
    aws("dynamodb").create_table(**users_table_definition(table_name))
    mine = dataclasses.replace(shared_resources, table_name=table_name)
    for name, value in mine.environment().items():
        monkeypatch.setenv(name, value)
    return mine


@pytest.fixture
def store(aws: Clients, resources: UserServiceResources) -> Any:
    """The data model on this test's table, through a test-side client."""
    users = load_function("user_service", "users")
    return users.UserStore(table_name=resources.table_name, dynamodb=aws("dynamodb"))


@dataclass
class Api:
    """The running API and a session to call it with."""

    server: ApiServer
    http: requests.Session

    @property
    def url(self) -> str:
        return self.server.url

    def create(self, email: str, name: str = "Test User") -> requests.Response:
        return self.http.post(f"{self.url}/users", json={"email": email, "name": name})

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.http.get(f"{self.url}{path}", params=params or None)


@pytest.fixture(scope="module")
def api_server_of_module() -> Iterator[ApiServer]:
    """One server per module: the handler reads its environment on every request."""
    server = api_server().start()
    yield server
    server.stop()


@pytest.fixture
def api(api_server_of_module: ApiServer, resources: UserServiceResources) -> Iterator[Api]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield Api(server=api_server_of_module, http=session)


def drain(aws: Clients, resources: UserServiceResources) -> list[dict[str, Any]]:
    """Takes every SNS notification waiting in the events queue (the SNS envelopes)."""
    sqs = aws("sqs")
    envelopes: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=resources.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            return envelopes
        envelopes += [json.loads(message["Body"]) for message in batch]
        sqs.delete_message_batch(
            QueueUrl=resources.events_queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]}
                for i, message in enumerate(batch)
            ],
        )
