"""Specification of opskit_common.config: environment settings with clear errors."""

from __future__ import annotations

import pytest
from opskit_common.config import ConfigurationError, env_choice, env_int, env_list, require_env


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


def test_given_whole_number_setting_then_value_default_or_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPSKIT_DAYS", raising=False)
    assert env_int("OPSKIT_DAYS", default=7, minimum=1) == 7
    monkeypatch.setenv("OPSKIT_DAYS", " 30 ")
    assert env_int("OPSKIT_DAYS", default=7, minimum=1) == 30
    monkeypatch.setenv("OPSKIT_DAYS", "thirty")
    with pytest.raises(
        ConfigurationError, match="OPSKIT_DAYS must be a whole number, got 'thirty'"
    ):
        env_int("OPSKIT_DAYS", default=7)
    monkeypatch.setenv("OPSKIT_DAYS", "0")
    with pytest.raises(ConfigurationError, match="OPSKIT_DAYS must be >= 1, got 0"):
        env_int("OPSKIT_DAYS", default=7, minimum=1)


def test_given_comma_separated_setting_then_stripped_items_or_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPSKIT_ENVS", raising=False)
    assert env_list("OPSKIT_ENVS", default=("dev",)) == ("dev",)
    monkeypatch.setenv("OPSKIT_ENVS", " dev, staging ,,")
    assert env_list("OPSKIT_ENVS") == ("dev", "staging")
