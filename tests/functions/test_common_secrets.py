"""Specification of opskit_common.secrets and opskit_common.clients, against moto over HTTP."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest
from opskit_common import clients, secrets
from opskit_common.config import ConfigurationError
from opskit_common.secrets import SecretError, get_secret_string

REGION = "eu-west-1"


@pytest.fixture
def make_secret(secretsmanager) -> Callable[..., str]:  # type: ignore[no-untyped-def]
    def make(value: str | None = None, *, binary: bytes | None = None) -> str:
        name = f"opskit-test-{uuid.uuid4().hex[:12]}"
        if binary is not None:
            return secretsmanager.create_secret(Name=name, SecretBinary=binary)["ARN"]
        return secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]

    return make


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_given_secret_when_read_then_its_string_is_returned(make_secret) -> None:  # type: ignore[no-untyped-def]
    arn = make_secret("s3cr3t-value")
    assert get_secret_string(arn) == "s3cr3t-value"


def test_given_secret_read_once_when_read_again_then_no_secrets_manager_call_is_made(
    make_secret, secretsmanager
) -> None:  # type: ignore[no-untyped-def]
    arn = make_secret("cached-value")
    assert get_secret_string(arn) == "cached-value"

    secretsmanager.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)

    assert get_secret_string(arn) == "cached-value"


def test_given_cached_secret_when_ttl_expires_then_it_is_fetched_again(
    make_secret, secretsmanager
) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    arn = make_secret("v1")
    assert get_secret_string(arn, ttl_seconds=300, clock=clock) == "v1"
    secretsmanager.put_secret_value(SecretId=arn, SecretString="v2")

    clock.now += 299
    assert get_secret_string(arn, ttl_seconds=300, clock=clock) == "v1"
    clock.now += 2
    assert get_secret_string(arn, ttl_seconds=300, clock=clock) == "v2"


def test_given_cache_cleared_then_next_read_goes_to_secrets_manager(
    make_secret, secretsmanager
) -> None:  # type: ignore[no-untyped-def]
    arn = make_secret("v1")
    get_secret_string(arn)
    secretsmanager.put_secret_value(SecretId=arn, SecretString="v2")
    secrets.clear_cache()
    assert get_secret_string(arn) == "v2"


def test_given_one_secret_forgotten_then_only_it_is_read_again(make_secret, secretsmanager) -> None:  # type: ignore[no-untyped-def]
    """After a webhook rejects its URL, the caller re-reads that secret and nothing else."""
    rotated, untouched = make_secret("old-url"), make_secret("other-value")
    get_secret_string(rotated)
    get_secret_string(untouched)
    secretsmanager.put_secret_value(SecretId=rotated, SecretString="new-url")
    secretsmanager.put_secret_value(SecretId=untouched, SecretString="changed-too")

    secrets.forget(rotated)

    assert get_secret_string(rotated) == "new-url"
    assert get_secret_string(untouched) == "other-value"


def test_forgetting_a_secret_that_was_never_read_is_harmless() -> None:
    secrets.forget("arn:aws:secretsmanager:eu-west-1:123456789012:secret:never-read-AbCdEf")


def test_given_missing_secret_then_configuration_error_names_secret_and_error_code(
    aws_environment: str,
) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:does-not-exist-AbCdEf"
    with pytest.raises(SecretError) as error:
        get_secret_string(arn)
    assert str(error.value) == f"cannot read secret {arn}: ResourceNotFoundException"
    assert isinstance(error.value, ConfigurationError)


def test_given_binary_secret_then_error_says_binary_is_unsupported_without_the_value(
    make_secret,
) -> None:  # type: ignore[no-untyped-def]
    arn = make_secret(binary=b"binary-secret-bytes")
    with pytest.raises(SecretError, match="has no SecretString") as error:
        get_secret_string(arn)
    assert "binary-secret-bytes" not in str(error.value)


def test_given_debug_logging_when_secret_is_read_then_value_never_reaches_the_logs(
    make_secret, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    """botocore logs raw response bodies at DEBUG; Lambda applies the function's level to root."""
    arn = make_secret("do-not-log-this-value")
    caplog.set_level(logging.DEBUG)

    logging.getLogger("opskit.test").debug("capture works at DEBUG")
    get_secret_string(arn)

    assert "capture works at DEBUG" in caplog.text
    assert "do-not-log-this-value" not in caplog.text
    assert logging.getLogger("botocore").getEffectiveLevel() >= logging.INFO


def test_client_is_created_once_and_reused_until_reset(aws_environment: str) -> None:
    first = clients.client("secretsmanager")
    assert clients.client("secretsmanager") is first
    clients.reset_clients()
    assert clients.client("secretsmanager") is not first


def test_client_honours_aws_endpoint_url(aws_environment: str) -> None:
    assert clients.client("secretsmanager").meta.endpoint_url == aws_environment
    assert clients.client("secretsmanager").meta.region_name == REGION
