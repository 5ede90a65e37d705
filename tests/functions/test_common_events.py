"""Specification of opskit_common.events: reading event fields with errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opskit_common.events import (
    MalformedEventError,
    optional,
    optional_bool,
    optional_choice,
    optional_int,
    parse_timestamp,
    require,
    require_str,
)

EVENT = {
    "time": "2026-11-25T10:15:30Z",
    "detail": {"pipeline": "web", "execution-id": "e-1", "attempt": 2, "empty": "", "gone": None},
}


def test_given_nested_field_when_required_then_its_value_is_returned() -> None:
    assert require(EVENT, "detail.execution-id") == "e-1"
    assert require(EVENT, "detail.attempt") == 2
    assert require(EVENT, "detail") is EVENT["detail"]


@pytest.mark.parametrize("path", ["detail.stage", "region", "detail.gone", "detail.a.b"])
def test_given_absent_or_null_field_when_required_then_error_names_the_dotted_path(
    path: str,
) -> None:
    with pytest.raises(MalformedEventError) as error:
        require(EVENT, path)
    assert str(error.value) == f"event is missing required field '{path}'"


def test_malformed_event_error_is_a_value_error_so_generic_handlers_still_catch_it() -> None:
    assert issubclass(MalformedEventError, ValueError)


@pytest.mark.parametrize(
    ("event", "kind"), [([], "list"), ("text", "str"), (None, "null"), (42, "int")]
)
def test_given_non_object_event_when_reading_then_error_says_what_it_got(
    event: object, kind: str
) -> None:
    with pytest.raises(MalformedEventError, match=f"event must be a JSON object, got {kind}"):
        require(event, "detail.pipeline")
    with pytest.raises(MalformedEventError, match="must be a JSON object"):
        optional(event, "detail.stage")


def test_given_intermediate_that_is_not_an_object_then_error_names_that_intermediate() -> None:
    event = {"detail": "oops"}
    with pytest.raises(MalformedEventError) as error:
        require(event, "detail.pipeline")
    assert str(error.value) == "event field 'detail' must be an object, got str"


def test_given_non_string_or_empty_value_when_required_as_string_then_error_says_why() -> None:
    with pytest.raises(MalformedEventError, match=r"'detail.attempt' must be a string, got int"):
        require_str(EVENT, "detail.attempt")
    with pytest.raises(MalformedEventError, match=r"'detail.empty' must not be empty"):
        require_str(EVENT, "detail.empty")
    assert require_str(EVENT, "detail.pipeline") == "web"


def test_given_absent_or_null_optional_field_then_default_is_returned() -> None:
    assert optional(EVENT, "detail.stage") is None
    assert optional(EVENT, "detail.gone", "n/a") == "n/a"
    assert optional(EVENT, "detail.pipeline", "n/a") == "web"


@pytest.mark.parametrize(
    "value",
    ["2026-11-25T10:15:30Z", "2026-11-25T11:15:30+01:00", "2026-11-25T10:15:30"],
)
def test_given_iso_timestamp_then_it_is_parsed_as_timezone_aware_utc(value: str) -> None:
    parsed = parse_timestamp(value, field="time")
    assert parsed == datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(("value", "message"), [("yesterday", "not an ISO 8601"), (17, "got int")])
def test_given_bad_timestamp_then_error_names_the_field(value: object, message: str) -> None:
    with pytest.raises(MalformedEventError, match=f"event field 'time'.*{message}"):
        parse_timestamp(value, field="time")


SCHEDULED = {"backup_type": "ec2", "dry_run": True, "retention_days": 14, "flag": "yes"}


def test_given_typed_optional_fields_then_values_or_defaults_are_returned() -> None:
    assert optional_bool(SCHEDULED, "dry_run", default=False) is True
    assert optional_bool(SCHEDULED, "absent", default=False) is False
    assert optional_int(SCHEDULED, "retention_days", default=30, minimum=1) == 14
    assert optional_int({}, "retention_days", default=30) == 30
    assert optional_choice(SCHEDULED, "backup_type", ("all", "ec2", "rds"), default="all") == "ec2"
    assert optional_choice({}, "backup_type", ("all", "ec2"), default="all") == "all"


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (
            lambda: optional_bool(SCHEDULED, "flag", default=False),
            "event field 'flag' must be true or false, got 'yes'",
        ),
        (
            lambda: optional_int({"n": "7"}, "n", default=1),
            "event field 'n' must be a whole number, got str",
        ),
        (
            lambda: optional_int({"n": True}, "n", default=1),
            "event field 'n' must be a whole number, got bool",
        ),
        (
            lambda: optional_int({"n": 0}, "n", default=1, minimum=1, maximum=3650),
            "event field 'n' must be in 1..3650, got 0",
        ),
        (
            lambda: optional_choice({"t": "s3"}, "t", ("all", "ec2"), default="all"),
            "event field 't' has invalid value 's3'; valid choices: all, ec2",
        ),
    ],
)
def test_given_mistyped_optional_field_then_error_names_field_and_what_is_wrong(
    read: Any, message: str
) -> None:
    with pytest.raises(MalformedEventError) as error:
        read()
    assert str(error.value) == message
