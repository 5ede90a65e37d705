"""EnvironmentProfile: what differs between dev, staging and prod, and what it refuses."""

from dataclasses import replace

import pytest
from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from opskit import BUILT_IN_PROFILES, DEV, PROD, STAGING, DeploymentStrategy, ProfileError


@pytest.mark.parametrize(
    ("profile", "retention", "removal", "strategy", "log_level"),
    [
        (
            DEV,
            logs.RetentionDays.ONE_WEEK,
            RemovalPolicy.DESTROY,
            DeploymentStrategy.ALL_AT_ONCE,
            "DEBUG",
        ),
        (
            STAGING,
            logs.RetentionDays.TWO_WEEKS,
            RemovalPolicy.DESTROY,
            DeploymentStrategy.LINEAR_10_PERCENT_EVERY_MINUTE,
            "INFO",
        ),
        (
            PROD,
            logs.RetentionDays.ONE_MONTH,
            RemovalPolicy.RETAIN,
            DeploymentStrategy.CANARY_10_PERCENT_5_MINUTES,
            "INFO",
        ),
    ],
)
def test_built_in_profiles_differ_as_documented(profile, retention, removal, strategy, log_level):
    assert profile.log_retention == retention
    assert profile.removal_policy == removal
    assert profile.deployment_strategy == strategy
    assert profile.log_level == log_level


def test_only_prod_keeps_point_in_time_recovery_and_only_dev_logs_api_bodies():
    assert [p.name for p in BUILT_IN_PROFILES.values() if p.point_in_time_recovery] == ["prod"]
    assert [p.name for p in BUILT_IN_PROFILES.values() if p.api_data_tracing] == ["dev"]


def test_alarm_actions_and_schedules_are_on_outside_dev():
    enabled = [p.name for p in BUILT_IN_PROFILES.values() if p.alarm_actions_enabled]
    scheduled = [p.name for p in BUILT_IN_PROFILES.values() if p.schedules_enabled]
    assert enabled == scheduled == ["staging", "prod"]


def test_only_prod_is_never_scaled_down_off_hours():
    assert [p.name for p in BUILT_IN_PROFILES.values() if not p.scale_down_off_hours] == ["prod"]


def test_only_prod_protects_from_deletion_and_publishes_business_metrics():
    assert [p.name for p in BUILT_IN_PROFILES.values() if p.deletion_protection] == ["prod"]
    assert [p.name for p in BUILT_IN_PROFILES.values() if p.business_metrics] == ["prod"]


def test_only_dev_allows_any_origin_for_cors():
    assert [p.name for p in BUILT_IN_PROFILES.values() if p.allow_wildcard_cors] == ["dev"]


def test_the_alias_is_the_environment_name_in_upper_case():
    assert [p.alias_name for p in BUILT_IN_PROFILES.values()] == ["DEV", "STAGING", "PROD"]


def test_profiles_are_immutable():
    with pytest.raises(AttributeError):
        PROD.log_level = "DEBUG"  # type: ignore[misc]


def test_a_custom_profile_is_a_replaced_built_in():
    qa = replace(STAGING, name="qa", provisioned_concurrency=2)
    assert (qa.alias_name, qa.provisioned_concurrency) == ("QA", 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"log_retention": logs.RetentionDays.INFINITE}, "must not be infinite"),
        ({"log_level": "VERBOSE"}, "log level 'VERBOSE' is not one of"),
        ({"name": "Prod"}, "profile name 'Prod'"),
        ({"reserved_concurrency": -1}, "reserved_concurrency must be >= 0"),
    ],
)
def test_a_profile_refuses_values_it_cannot_honour(change, message):
    with pytest.raises(ProfileError, match=message):
        replace(DEV, **change)
