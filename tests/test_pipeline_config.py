"""The cdk.json `pipeline` entry: typed values checked against the environments it promotes
through, and one readable line for every mistake."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from stacks.app import build, pipeline_requested, project_settings
from stacks.config import ConfigError, load_environment
from stacks.pipeline_config import load_pipeline, with_pipeline
from tests.synth import CDK_CONTEXT, make_app, with_change

ENVIRONMENTS = CDK_CONTEXT["environments"]


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


@pytest.mark.parametrize(
    ("approval_before", "verify_after"),
    [(None, {"staging"}), (["staging"], {"dev"}), (["staging", "prod"], {"dev", "staging"})],
)
def test_by_default_each_stage_before_an_approval_is_verified(approval_before, verify_after):
    raw = pipeline_with(approvalBefore=approval_before, verifyAfter=None)
    pipeline = load_pipeline(raw, ENVIRONMENTS)
    assert pipeline.stages == ("dev", "staging", "prod")
    assert pipeline.verify_after == verify_after


def elsewhere(*names: str) -> dict[str, Any]:
    """The environments, those named deployed to another account than the pipeline's."""
    return with_change(*names, account="222222222222")


def test_the_one_environment_in_the_pipelines_account_and_region_reports_it_by_default():
    raw = pipeline_with(notifierEnvironment=None)
    assert load_pipeline(raw, elsewhere("dev", "staging")).notifier_environment == "prod"
    assert load_pipeline(raw, elsewhere("dev", "staging", "prod")).notifier_environment is None
    with pytest.raises(ConfigError, match="environments dev, staging all deploy to the pipeline"):
        load_pipeline(raw, elsewhere("prod"))


@pytest.mark.parametrize("environments", [{}, None, ["dev"]])
def test_a_pipeline_without_environments_is_named_in_one_line(environments):
    with pytest.raises(ConfigError, match=re.escape('cdk.json context has no "environments" map')):
        load_pipeline(PIPELINE, environments)


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
        (pipeline_with(name="ops kit"), ENVIRONMENTS, "'name' must be a letter, then up to 99"),
        (pipeline_with(name="ops_kit"), ENVIRONMENTS, "'name' must be a letter, then up to 99"),
        (pipeline_with(name="1opskit"), ENVIRONMENTS, "'name' must be a letter, then up to 99"),
        (pipeline_with(name="o" * 101), ENVIRONMENTS, "'name' must be a letter, then up to 99"),
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
        (
            pipeline_with(notifierEnvironment=["prod"]),
            ENVIRONMENTS,
            "'notifierEnvironment' must be a non-empty string, got ['prod']",
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
