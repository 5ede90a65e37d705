"""The cdk.json environments map and pipeline entry: typed values, and one readable line for
every mistake."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from opskit import WebhookFormat
from stacks.app import build, pipeline_requested, project_settings
from stacks.config import ConfigError, load_environment, load_pipeline, with_pipeline
from tests.synth import CDK_CONTEXT, ROOT, make_app

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


PIPELINE = project_settings()["pipeline"]


def pipeline_with(**values: object) -> dict:
    raw = {**copy.deepcopy(PIPELINE), **values}
    return {key: value for key, value in raw.items() if value is not None}


def test_the_committed_pipeline_verifies_staging_and_asks_before_prod():
    pipeline = load_pipeline(PIPELINE, ENVIRONMENTS)
    assert pipeline.stages == ("dev", "staging", "prod")
    assert (pipeline.verify_after, pipeline.approval_before) == ({"staging"}, {"prod"})
    assert (pipeline.name, pipeline.branch, pipeline.notifier_environment) == (
        "opskit",
        "main",
        "prod",
    )
    assert pipeline.cross_account is False


def test_by_default_the_last_stage_waits_for_approval_of_the_verified_stage_before_it():
    raw = pipeline_with(
        name=None, branch=None, approvalBefore=None, verifyAfter=None, stages=["dev", "prod"]
    )
    pipeline = load_pipeline(raw, ENVIRONMENTS)
    assert (pipeline.name, pipeline.branch) == ("opskit", "main")
    assert (pipeline.approval_before, pipeline.verify_after) == ({"prod"}, {"dev"})


def test_stages_in_other_accounts_make_the_pipeline_cross_account():
    environments = with_change("prod", account="222222222222")
    assert load_pipeline(PIPELINE | {"notifierEnvironment": "dev"}, environments).cross_account
    same = with_change("prod", account=PIPELINE["account"], region=PIPELINE["region"])
    assert not load_pipeline(PIPELINE, same).cross_account


@pytest.mark.parametrize(
    ("raw", "environments", "message"),
    [
        ("opskit", ENVIRONMENTS, "pipeline: expected a JSON object, got str"),
        (pipeline_with(connectionArn=None), ENVIRONMENTS, "missing required key 'connectionArn'"),
        (pipeline_with(source="x"), ENVIRONMENTS, "unknown key 'source'; valid keys:"),
        (pipeline_with(account="1234"), ENVIRONMENTS, "'account' must be a 12-digit AWS account"),
        (pipeline_with(region="moon"), ENVIRONMENTS, "'region' must be an AWS region"),
        (
            pipeline_with(connectionArn="arn:aws:s3:::bucket"),
            ENVIRONMENTS,
            "'connectionArn' must be the ARN of a CodeConnections (CodeStar) connection",
        ),
        (pipeline_with(repository="cdk-opskit"), ENVIRONMENTS, "'repository' must be owner/name"),
        (pipeline_with(name="ops kit"), ENVIRONMENTS, "'name' must be 1-100 letters"),
        (pipeline_with(stages=[]), ENVIRONMENTS, "'stages' must name at least one environment"),
        (
            pipeline_with(stages=["dev", "qa"]),
            ENVIRONMENTS,
            "'stages' names 'qa', which is not an environment; valid choices: dev, prod, staging",
        ),
        (pipeline_with(stages=["dev", "dev"]), ENVIRONMENTS, "'stages' lists 'dev' more than once"),
        (
            pipeline_with(stages=["dev", "staging"]),
            ENVIRONMENTS,
            "'approvalBefore' names 'prod', which is not one of the stages dev, staging",
        ),
        (
            pipeline_with(verifyAfter="staging"),
            ENVIRONMENTS,
            "'verifyAfter' must be a list of environment names, got 'staging'",
        ),
        (
            pipeline_with(notifierEnvironment=None),
            ENVIRONMENTS,
            "environments dev, prod, staging all deploy to the pipeline's account and region; "
            "set 'notifierEnvironment'",
        ),
        (
            pipeline_with(notifierEnvironment="ops"),
            ENVIRONMENTS,
            "'notifierEnvironment' names 'ops', which is not an environment",
        ),
        (pipeline_with(branch="my branch"), ENVIRONMENTS, "'branch' must be a branch name"),
        (
            pipeline_with(notifierEnvironment="prod"),
            with_change("prod", account="222222222222"),
            "'notifierEnvironment' 'prod' deploys to 222222222222/eu-west-1, where the "
            "pipeline's events (111111111111/eu-west-1) never arrive",
        ),
        (
            pipeline_with(notifierEnvironment="dev"),
            with_change("prod", region="eu-west-2"),
            "stage 'prod' deploys to eu-west-2, but the pipeline is in eu-west-1; stages in "
            "other regions are not supported",
        ),
        (
            pipeline_with(stages=["dev"], approvalBefore=["dev"], verifyAfter=[]),
            with_change("dev", monthlyBudgetUsd=0),
            "environment 'dev': 'monthlyBudgetUsd' must be a positive number",
        ),
    ],
)
def test_a_bad_pipeline_value_is_named_in_one_line(raw, environments, message):
    with pytest.raises(ConfigError) as error:
        load_pipeline(raw, environments)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_notifier_environment_also_reports_the_pipeline_unless_it_watches_every_one():
    environments = with_change("prod", pipelines=["api"])
    pipeline = load_pipeline(PIPELINE, environments)
    assert with_pipeline(load_environment(environments, "prod"), pipeline).pipelines == (
        "api",
        "opskit",
    )
    watching_all = load_pipeline(PIPELINE, ENVIRONMENTS)
    assert with_pipeline(load_environment(ENVIRONMENTS, "prod"), watching_all).pipelines == ()
    staging = with_pipeline(
        load_environment(with_change("staging", pipelines=["x"]), "staging"), pipeline
    )
    assert staging.pipelines == ("x",)


def test_only_a_stage_verified_from_another_account_trusts_the_pipelines_account():
    environments = with_change("staging", account="222222222222")
    pipeline = load_pipeline(PIPELINE, environments)
    staging = with_pipeline(load_environment(environments, "staging"), pipeline)
    assert staging.verifier_account == PIPELINE["account"]
    prod = with_pipeline(load_environment(environments, "prod"), pipeline)
    assert prod.verifier_account is None
    same_account = load_pipeline(PIPELINE, ENVIRONMENTS)
    assert (
        with_pipeline(load_environment(ENVIRONMENTS, "staging"), same_account).verifier_account
        is None
    )


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("false", False), ("true", True), (True, True)]
)
def test_the_pipeline_context_is_true_or_false(value, expected):
    assert pipeline_requested(value) is expected


def test_an_unclear_pipeline_context_is_named_in_one_line():
    """app.py prints it and exits 1, as for every config error (tested above)."""
    with pytest.raises(ConfigError) as error:
        build(make_app(pipeline="yes"))
    assert str(error.value) == "--context pipeline must be true or false, got 'yes'"


def test_asking_for_the_pipeline_without_a_pipeline_entry_is_named():
    app = make_app(pipeline="true")
    with pytest.raises(ConfigError, match=r'needs a "pipeline" entry in cdk\.json'):
        build(app, settings={})
