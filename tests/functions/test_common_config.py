"""Specification of opskit_common.config: environment settings with clear errors."""

from __future__ import annotations

import pytest
from opskit_common.config import ConfigurationError, env_choice, require_env


def test_given_variable_set_when_required_then_value_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPSKIT_TEST_VAR", "  value ")
    assert require_env("OPSKIT_TEST_VAR") == "value"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_given_variable_unset_or_blank_when_required_then_error_names_it(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("OPSKIT_TEST_VAR", raising=False)
    else:
        monkeypatch.setenv("OPSKIT_TEST_VAR", value)
    with pytest.raises(ConfigurationError, match="environment variable OPSKIT_TEST_VAR is not set"):
        require_env("OPSKIT_TEST_VAR")


def test_given_choice_unset_then_default_and_given_any_case_then_lowercase_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPSKIT_FORMAT", raising=False)
    assert env_choice("OPSKIT_FORMAT", ("slack", "teams"), default="slack") == "slack"
    monkeypatch.setenv("OPSKIT_FORMAT", "Teams")
    assert env_choice("OPSKIT_FORMAT", ("slack", "teams"), default="slack") == "teams"


def test_given_invalid_choice_then_error_names_variable_value_and_valid_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPSKIT_FORMAT", "discord")
    with pytest.raises(ConfigurationError) as error:
        env_choice("OPSKIT_FORMAT", ("slack", "teams"), default="slack")
    assert str(error.value) == (
        "environment variable OPSKIT_FORMAT has invalid value 'discord'; "
        "valid choices: slack, teams"
    )
