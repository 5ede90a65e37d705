"""Fixtures for handler tests: handlers run against real HTTP endpoints on 127.0.0.1.

AWS APIs are served by moto's ThreadedMotoServer, reached through AWS_ENDPOINT_URL
exactly as the deployed code reaches real AWS; webhooks by a local HTTP server. The server
is `make local`'s emulator, with its DynamoDB fidelity fixes: without them, two concurrent
conditional writes to one item can both succeed in moto, never in DynamoDB.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from opskit_common import clients, secrets

from opskit_local.emulator import Emulator
from tests.functions.stand_ins import Sleeps, WebhookServer

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "opskit"
FUNCTIONS = PACKAGE_ROOT / "functions"

REGION = "eu-west-1"


@dataclass
class LambdaContext:
    """The slice of the Lambda context object the handlers read."""

    function_name: str = "test-function"
    function_version: str = "1"
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:test-function:DEV"
    memory_limit_in_mb: int = 128
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    log_group_name: str = "/aws/lambda/test-function"
    log_stream_name: str = "2026/11/25/[1]abcdef"
    remaining_seconds: float = 30.0

    def get_remaining_time_in_millis(self) -> int:
        return round(self.remaining_seconds * 1000)


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, shared by the whole session."""
    with Emulator() as emulator:
        yield emulator.endpoint_url


@pytest.fixture
def aws_environment(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points boto3 at moto with throwaway credentials; returns the endpoint URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


def load_handler(name: str) -> ModuleType:
    """Imports `opskit/functions/<name>/app.py` fresh, as its own module.

    Every function's entry module is called `app`, so each is loaded under a
    unique name, and anew, so module-level caches start empty.
    """
    path = FUNCTIONS / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"opskit_function_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A Slack/Teams stand-in on a free loopback port, scripted per test."""
    server = WebhookServer().start()
    yield server
    server.stop()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(autouse=True)
def fresh_layer_caches() -> Iterator[None]:
    """Layer modules live for the whole session, like a warm sandbox; each test starts cold."""
    clients.reset_clients()
    secrets.clear_cache()
    yield
    clients.reset_clients()
    secrets.clear_cache()


@pytest.fixture
def secretsmanager(aws_environment: str) -> Any:
    """A test-side client, independent of the helpers under test."""
    return boto3.client("secretsmanager", region_name=REGION, endpoint_url=aws_environment)
