"""The cdk.json environments map: typed values, and one readable line for every mistake."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from opskit import WebhookFormat
from stacks.config import ConfigError, load_environment
from tests.synth import CDK_CONTEXT, ROOT

ENVIRONMENTS = CDK_CONTEXT["environments"]


def with_change(name: str, **values: object) -> dict:
    environments = copy.deepcopy(ENVIRONMENTS)
    environments[name].update(values)
    return environments


def test_no_environment_means_dev():
    assert load_environment(ENVIRONMENTS, None).name == "dev"


@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_every_committed_environment_loads_with_its_profile(name):
    config = load_environment(ENVIRONMENTS, name)
    assert config.profile.name == name
    assert config.monthly_budget_usd > 0
    assert config.cost_center


def test_account_and_region_are_optional_and_make_an_environment_aware_stack_when_set():
    config = load_environment(
        with_change("prod", account="123456789012", region="eu-west-1"), "prod"
    )
    assert (config.account, config.region) == ("123456789012", "eu-west-1")
    assert load_environment(ENVIRONMENTS, "prod").account is None


def test_an_environment_can_borrow_a_built_in_profile():
    environments = copy.deepcopy(ENVIRONMENTS)
    environments["qa"] = {**environments["staging"], "profile": "staging"}
    config = load_environment(environments, "qa")
    assert (config.profile.name, config.profile.alias_name) == ("qa", "QA")
    assert (
        config.profile.deployment_strategy
        == load_environment(ENVIRONMENTS, "staging").profile.deployment_strategy
    )


def test_webhook_format_and_pipelines_are_typed():
    config = load_environment(
        with_change("dev", webhookFormat="teams", pipelines=["api", "web"]), "dev"
    )
    assert config.webhook_format is WebhookFormat.TEAMS
    assert config.pipelines == ("api", "web")


def test_the_log_processor_keys_default_to_watching_every_function_of_the_stack():
    config = load_environment(ENVIRONMENTS, "prod")
    assert config.log_groups == ()
    assert config.watch_stack_functions is True
    assert (config.error_patterns, config.critical_patterns) == (None, None)
    assert (config.alert_window_minutes, config.log_filter_pattern) == (15, None)


def test_the_log_processor_keys_are_typed():
    config = load_environment(
        with_change(
            "dev",
            logGroups=["/aws/lambda/legacy", "/ecs/web"],
            watchStackFunctions=False,
            logFilterPattern="?ERROR ?FATAL",
            errorPatterns=[r"\bwarn\b"],
            criticalPatterns=[],
            alertWindowMinutes=5,
        ),
        "dev",
    )
    assert config.log_groups == ("/aws/lambda/legacy", "/ecs/web")
    assert config.watch_stack_functions is False
    assert config.log_filter_pattern == "?ERROR ?FATAL"
    assert (config.error_patterns, config.critical_patterns) == ((r"\bwarn\b",), ())
    assert config.alert_window_minutes == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"logGroups": ["bad name!"]},
            "'logGroups' has 'bad name!', which is not a CloudWatch Logs log group name",
        ),
        ({"logGroups": "/aws/lambda/a"}, "'logGroups' must be a list of non-empty strings"),
        ({"watchStackFunctions": "no"}, "'watchStackFunctions' must be true or false"),
        ({"errorPatterns": ["ok", "("]}, "'errorPatterns' item 1 '(' is not a regular expression"),
        ({"criticalPatterns": [1]}, "'criticalPatterns' must be a list of non-empty strings"),
        ({"alertWindowMinutes": 0}, "'alertWindowMinutes' must be a whole number of minutes"),
        ({"alertWindowMinutes": 2.5}, "'alertWindowMinutes' must be a whole number of minutes"),
        ({"logFilterPattern": 5}, "'logFilterPattern' must be a CloudWatch Logs filter pattern"),
    ],
)
def test_a_bad_log_processor_value_is_named_in_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        load_environment(with_change("staging", **change), "staging")
    assert message in str(error.value)
    assert str(error.value).startswith("environment 'staging': ")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("environments", "name", "message"),
    [
        (ENVIRONMENTS, "qa", "unknown environment 'qa'; valid choices: dev, prod, staging"),
        (
            with_change("prod", account="12345"),
            "prod",
            "'account' must be a 12-digit AWS account id, got '12345'",
        ),
        (with_change("prod", region="mars-1"), "prod", "'region' must be an AWS region"),
        (
            with_change("dev", alertEmails=["ops"]),
            "dev",
            "'alertEmails' has 'ops', which is not an e-mail address",
        ),
        (
            with_change("dev", monthlyBudgetUsd=0),
            "dev",
            "'monthlyBudgetUsd' must be a positive number, got 0",
        ),
        (
            with_change("dev", monthlyBudgetUsd="50"),
            "dev",
            "'monthlyBudgetUsd' must be a positive number",
        ),
        (
            with_change("dev", webhookFormat="discord"),
            "dev",
            "'webhookFormat' 'discord' is not one of slack, teams",
        ),
        (with_change("dev", costCentre="x"), "dev", "unknown key 'costCentre'; valid keys:"),
        (with_change("dev", profile="sandbox"), "dev", "profile 'sandbox' is not built in"),
        (
            with_change("dev", includeStageEvents="yes"),
            "dev",
            "'includeStageEvents' must be true or false",
        ),
        ({}, "dev", 'no "environments" map'),
        (
            with_change("dev", alertEmails=["a@example.com", "a@example.com"]),
            "dev",
            "'alertEmails' lists 'a@example.com' more than once",
        ),
        (
            {**ENVIRONMENTS, "Prod_EU": {**ENVIRONMENTS["prod"], "profile": "prod"}},
            "Prod_EU",
            "profile name 'Prod_EU' must be 1-20 lower-case letters",
        ),
    ],
)
def test_a_bad_value_is_named_in_one_line(environments, name, message):
    with pytest.raises(ConfigError, match=None) as error:
        load_environment(environments, name)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_required_value_is_named():
    environments = copy.deepcopy(ENVIRONMENTS)
    del environments["staging"]["costCenter"]
    with pytest.raises(
        ConfigError, match="environment 'staging': missing required key 'costCenter'"
    ):
        load_environment(environments, "staging")


def run_app(context: dict, tmp_path) -> subprocess.CompletedProcess[str]:
    """Runs app.py the way the CDK CLI does: context in CDK_CONTEXT_JSON, output in CDK_OUTDIR."""
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_synth_of_a_bad_config_value_exits_non_zero_with_one_line_and_no_traceback(tmp_path):
    context = {
        **CDK_CONTEXT,
        "environment": "prod",
        "environments": with_change("prod", monthlyBudgetUsd=-5),
    }
    result = run_app(context, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "opskit: environment 'prod': 'monthlyBudgetUsd' must be a positive number, got -5"
    ]


def test_cdk_synth_of_an_unknown_environment_fails_with_the_valid_choices(tmp_path):
    result = subprocess.run(
        [
            "npx",
            "--no-install",
            "cdk",
            "synth",
            "--context",
            "environment=qa",
            "--quiet",
            "--output",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode != 0
    assert "opskit: unknown environment 'qa'; valid choices: dev, prod, staging" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
