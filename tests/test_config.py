"""The cdk.json environments map and pipeline entry: typed values, and one readable line for
every mistake."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace

import pytest

from opskit import ApiFirewall, CleanupScope, Packaging, SchedulerTimes, WebhookFormat
from stacks.config import (
    BackupConfig,
    ConfigError,
    LogProcessorConfig,
    ScheduleConfig,
    SnapshotCleanupConfig,
    UserServiceConfig,
    load_environment,
)
from tests.synth import CDK_CONTEXT, ROOT, with_change

ENVIRONMENTS = CDK_CONTEXT["environments"]


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


@pytest.mark.parametrize(("name", "borrowed"), [("prod", "staging"), ("staging", "dev")])
def test_a_built_in_environment_keeps_its_own_profile(name, borrowed):
    """Another profile would drop prod's retention, PITR and deletion protection in one
    deployment."""
    with pytest.raises(ConfigError, match=f"'{name}' uses the {name} profile"):
        load_environment(with_change(name, profile=borrowed), name)
    assert load_environment(with_change(name, profile=name), name).profile.name == name


def test_webhook_format_and_pipelines_are_typed():
    config = load_environment(
        with_change("dev", webhookFormat="teams", pipelines=["api", "web"]), "dev"
    )
    assert config.webhook_format is WebhookFormat.TEAMS
    assert config.pipelines == ("api", "web")


def test_snapshot_cleanup_settings_are_optional_and_typed():
    environments = copy.deepcopy(ENVIRONMENTS)
    environments["dev"].pop("snapshotCleanup", None)
    assert load_environment(environments, "dev").snapshot_cleanup == SnapshotCleanupConfig()
    config = load_environment(
        with_change(
            "prod",
            snapshotCleanup={
                "retentionDays": 14,
                "scope": "all",
                "minKeepPerVolume": 0,
                "schedule": "rate(7 days)",
                "timeZone": "Europe/London",
                "enabled": False,
                "dryRun": True,
            },
        ),
        "prod",
    )
    assert config.snapshot_cleanup == SnapshotCleanupConfig(
        schedule=ScheduleConfig("rate(7 days)", time_zone="Europe/London", enabled=False),
        retention_days=14,
        scope=CleanupScope.ALL,
        min_keep_per_volume=0,
        dry_run=True,
    )


def test_environment_scheduler_times_are_local_to_their_time_zone_and_default_to_weekdays():
    staging = load_environment(ENVIRONMENTS, "staging")
    times = staging.environment_scheduler.times
    assert times.time_zone.timezone_name == "Europe/London"
    assert (times.week_days, times.scale_down_at, times.scale_up_at) == (
        "MON-FRI",
        "20:00",
        "06:30",
    )
    assert (times.report_day, times.report_at) == ("WED", "10:00")
    environments = copy.deepcopy(ENVIRONMENTS)
    del environments["dev"]["environmentScheduler"]
    defaults = load_environment(environments, "dev").environment_scheduler.times
    zone = SchedulerTimes().time_zone
    assert replace(defaults, time_zone=zone) == replace(SchedulerTimes(), time_zone=zone)
    assert defaults.time_zone.timezone_name == "Etc/UTC"
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    config = load_environment(with_change("dev", environmentScheduler={"ebsKeyArns": [key]}), "dev")
    assert config.environment_scheduler.ebs_key_arns == (key,)


def test_backup_settings_are_typed_and_default_to_nightly_at_two_utc_for_a_week():
    assert load_environment(ENVIRONMENTS, "dev").backup == BackupConfig(
        schedule=ScheduleConfig("cron(0 2 * * ? *)", time_zone="Etc/UTC", enabled=None),
        retention_days=7,
    )
    config = load_environment(
        with_change(
            "dev",
            backup={
                "schedule": "cron(30 1 ? * MON-FRI *)",
                "timeZone": "Europe/London",
                "retentionDays": 30,
                "enabled": True,
            },
        ),
        "dev",
    )
    assert config.backup == BackupConfig(
        schedule=ScheduleConfig("cron(30 1 ? * MON-FRI *)", "Europe/London", enabled=True),
        retention_days=30,
    )
    hourly = with_change("dev", backup={"schedule": "rate(12 hours)"})
    assert load_environment(hourly, "dev").backup.schedule.expression == "rate(12 hours)"
    daily = with_change("dev", backup={"schedule": "rate(1 day)"})
    assert load_environment(daily, "dev").backup.schedule.expression == "rate(1 day)"
    monthly = with_change("dev", backup={"schedule": "cron(0 2 1 * ? *)"})
    assert load_environment(monthly, "dev").backup.schedule.expression == "cron(0 2 1 * ? *)"


@pytest.mark.parametrize("name", ["ops/slack-webhook", "ops/slack-AbC12", "ops/webhook"])
def test_webhook_secret_names_without_an_arn_like_suffix_are_accepted(name):
    assert (
        load_environment(with_change("dev", webhookSecretName=name), "dev").webhook_secret_name
        == name
    )


def test_the_log_processor_defaults_to_watching_every_function_of_the_stack():
    assert load_environment(ENVIRONMENTS, "prod").log_processor == LogProcessorConfig()
    assert LogProcessorConfig().watch_stack_functions is True


def test_the_log_processor_settings_are_typed():
    config = load_environment(
        with_change(
            "dev",
            logProcessor={
                "logGroups": ["/aws/lambda/legacy", "/ecs/web"],
                "watchStackFunctions": False,
                "filterPattern": "?ERROR ?FATAL",
                "errorPatterns": [r"\bwarn\b"],
                "criticalPatterns": [],
                "alertWindowMinutes": 5,
            },
        ),
        "dev",
    )
    assert config.log_processor == LogProcessorConfig(
        log_groups=("/aws/lambda/legacy", "/ecs/web"),
        watch_stack_functions=False,
        filter_pattern="?ERROR ?FATAL",
        error_patterns=(r"\bwarn\b",),
        critical_patterns=(),
        alert_window_minutes=5,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"logGroups": ["bad name!"]},
            "'logProcessor.logGroups' has 'bad name!', which is not a CloudWatch Logs log group",
        ),
        (
            {"logGroups": "/aws/lambda/a"},
            "'logProcessor.logGroups' must be a list of non-empty strings",
        ),
        (
            {"watchStackFunctions": "no"},
            "'logProcessor.watchStackFunctions' must be true or false",
        ),
        (
            {"errorPatterns": ["ok", "("]},
            "'logProcessor.errorPatterns' item 1 '(' is not a regular expression",
        ),
        (
            {"criticalPatterns": [1]},
            "'logProcessor.criticalPatterns' must be a list of non-empty strings",
        ),
        (
            {"alertWindowMinutes": 0},
            "'logProcessor.alertWindowMinutes' must be a whole number >= 1, got 0",
        ),
        (
            {"alertWindowMinutes": 2000},
            "'logProcessor.alertWindowMinutes' must be a whole number from 1 to 1440, got 2000",
        ),
        ({"filterPattern": 5}, "'logProcessor.filterPattern' must be a non-empty string"),
        ({"logGroup": []}, "unknown key 'logProcessor.logGroup'; valid keys:"),
    ],
)
def test_a_bad_log_processor_value_is_named_in_one_line(change, message):
    with pytest.raises(ConfigError) as error:
        load_environment(with_change("staging", logProcessor=change), "staging")
    assert message in str(error.value)
    assert str(error.value).startswith("environment 'staging': ")
    assert "\n" not in str(error.value)


def test_limits_are_inclusive():
    def log_processor(**change: object) -> LogProcessorConfig:
        return load_environment(with_change("dev", logProcessor=change), "dev").log_processor

    assert log_processor(alertWindowMinutes=1).alert_window_minutes == 1
    assert log_processor(alertWindowMinutes=1440).alert_window_minutes == 1440
    assert log_processor(filterPattern="x" * 1024).filter_pattern == "x" * 1024
    with pytest.raises(ConfigError, match="'logProcessor\\.filterPattern' must be a CloudWatch"):
        log_processor(filterPattern="x" * 1025)
    cents = load_environment(with_change("dev", monthlyBudgetUsd=0.5), "dev")
    assert cents.monthly_budget_usd == 0.5


def test_the_user_service_settings_are_typed_with_defaults():
    config = load_environment(
        with_change("dev", userService={"sesSender": "no-reply@example.com"}), "dev"
    )
    assert config.user_service == UserServiceConfig(ses_sender="no-reply@example.com")
    assert (config.user_service.rate_limit, config.user_service.burst_limit) == (100, 200)
    config = load_environment(
        with_change(
            "dev",
            userService={
                "sesSender": "hello@mail.example.org",
                "sesConfigurationSet": "transactional",
                "allowedOrigins": ["*"],
                "throttling": {"rateLimit": 20, "burstLimit": 40},
                "accountLoggingRole": False,
                "senderConcurrency": 5,
                "reserveSenderConcurrency": False,
                "userCountSource": "scan",
                "cognitoEmail": {"sesRegion": "eu-central-1", "verifiedIdentity": "domain"},
                "firewall": {
                    "requestsPerClient": 300,
                    "windowSeconds": 60,
                    "countManagedRules": True,
                },
            },
        ),
        "dev",
    )
    assert config.user_service == UserServiceConfig(
        firewall=ApiFirewall(requests_per_client=300, window_seconds=60, count_managed_rules=True),
        cognito_ses_region="eu-central-1",
        cognito_ses_domain_identity=True,
        ses_sender="hello@mail.example.org",
        ses_configuration_set="transactional",
        allowed_origins=("*",),
        rate_limit=20,
        burst_limit=40,
        account_logging_role=False,
        sender_concurrency=5,
        reserve_sender_concurrency=False,
        user_count_source="scan",
    )


def test_keys_left_out_take_the_defaults_the_readme_documents():
    config = load_environment(
        with_change(
            "staging",
            snapshotCleanup={},
            logProcessor={},
            userService={"sesSender": "no-reply@example.com"},
        ),
        "staging",
    )
    assert (config.include_stage_events, config.include_action_events) == (False, False)
    cleanup = config.snapshot_cleanup
    assert cleanup.schedule == ScheduleConfig("cron(0 3 ? * SUN *)", "Etc/UTC", enabled=None)
    assert (cleanup.retention_days, cleanup.scope, cleanup.min_keep_per_volume) == (
        30,
        CleanupScope.OWNED,
        1,
    )
    assert cleanup.dry_run is False
    assert config.log_processor.alert_window_minutes == 15
    users = config.user_service
    assert users is not None
    assert (users.account_logging_role, users.reserve_sender_concurrency) == (True, True)
    assert users.sender_concurrency == 10


def test_the_loaded_config_is_read_only():
    """One config is shared by every stack of the app: none of them can change it."""
    config = load_environment(ENVIRONMENTS, "dev")
    assert config.user_service is not None
    for value in (
        config,
        config.backup,
        config.backup.schedule,
        config.snapshot_cleanup,
        config.environment_scheduler,
        config.log_processor,
        config.user_service,
    ):
        with pytest.raises(FrozenInstanceError):
            value.__setattr__("name", "changed")


def test_an_environment_without_a_user_service_object_has_none():
    environments = copy.deepcopy(ENVIRONMENTS)
    environments["staging"].pop("userService", None)
    assert load_environment(environments, "staging").user_service is None
    assert all(
        load_environment(ENVIRONMENTS, name).user_service is not None for name in ENVIRONMENTS
    ), "every committed environment runs the user service"


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("dev", {}, "missing required key 'userService.sesSender'"),
        (
            "dev",
            {"sesSender": "Ops <ops@example.com>"},
            "'userService.sesSender' must be one plain e-mail address",
        ),
        (
            "prod",
            {"allowedOrigins": ["*"]},
            "'userService.allowedOrigins' has '*', which profile 'prod' does not allow",
        ),
        (
            "dev",
            {"allowedOrigins": ["*", "https://app.example.com"]},
            "'userService.allowedOrigins' lists '*' with other origins",
        ),
        (
            "dev",
            {"allowedOrigins": ["https://app.example.com/"]},
            "'userService.allowedOrigins' has 'https://app.example.com/', which is not '*' or "
            "an origin",
        ),
        (
            "dev",
            {"throttling": {"rateLimit": 0}},
            "'userService.throttling.rateLimit' must be a whole number >= 1, got 0",
        ),
        (
            "dev",
            {"throttling": {"burstLimit": 6000}},
            "'userService.throttling.burstLimit' must be a whole number from 1 to 5000",
        ),
        (
            "dev",
            {"throttling": {"rate": 5}},
            "unknown key 'userService.throttling.rate'; valid keys: burstLimit, rateLimit",
        ),
        (
            "dev",
            {"senderConcurrency": 1},
            "'userService.senderConcurrency' must be a whole number >= 2, got 1",
        ),
        (
            "dev",
            {"senderConcurrency": 1001},
            "'userService.senderConcurrency' must be a whole number from 2 to 1000, got 1001",
        ),
        (
            "dev",
            {"throttling": {"rateLimit": 10_001}},
            "'userService.throttling.rateLimit' must be a whole number from 1 to 10000, got 10001",
        ),
        (
            "dev",
            {"sesConfigurationSet": "a b"},
            "'userService.sesConfigurationSet' must be an SES configuration set name",
        ),
        (
            "dev",
            {"accountLoggingRole": "yes"},
            "'userService.accountLoggingRole' must be true or false",
        ),
        (
            "dev",
            {"userCountSource": "guess"},
            "'userService.userCountSource' 'guess' is not one of describe, scan",
        ),
        ("dev", {"origins": []}, "unknown key 'userService.origins'; valid keys:"),
        (
            "prod",
            {"cognitoEmail": {"sesRegion": "Frankfurt"}},
            "'userService.cognitoEmail.sesRegion' must be an AWS region such as eu-west-1",
        ),
        (
            "prod",
            {"cognitoEmail": {"sesRegion": "eu-west-1", "verifiedIdentity": "mailbox"}},
            "'userService.cognitoEmail.verifiedIdentity' 'mailbox' is not one of address, domain",
        ),
        ("prod", {"cognitoEmail": {}}, "missing required key 'userService.cognitoEmail.sesRegion'"),
        (
            "prod",
            {"firewall": {"windowSeconds": 90}},
            "'userService.firewall.windowSeconds' must be one of 60, 120, 300, 600, got 90",
        ),
        (
            "prod",
            {"firewall": {"requestsPerClient": 9}},
            "'userService.firewall.requestsPerClient' must be a whole number >= 10, got 9",
        ),
        (
            "prod",
            {"firewall": {"limit": 100}},
            "unknown key 'userService.firewall.limit'; valid keys: countManagedRules, "
            "requestsPerClient, windowSeconds",
        ),
        (
            "prod",
            {"firewall": {"countManagedRules": "yes"}},
            "'userService.firewall.countManagedRules' must be true or false, got 'yes'",
        ),
    ],
)
def test_a_bad_user_service_value_is_named_in_one_line(name, change, message):
    settings = {"sesSender": "no-reply@example.com", **change} if change else {}
    with pytest.raises(ConfigError) as error:
        load_environment(with_change(name, userService=settings), name)
    assert message in str(error.value)
    assert str(error.value).startswith(f"environment {name!r}: ")


@pytest.mark.parametrize(
    ("ses_region", "accepted"),
    [("eu-north-1", True), ("eu-west-1", True), ("us-east-2", False)],
)
def test_cognitos_ses_region_is_the_pools_own_or_a_shared_one_where_the_region_is_known(
    ses_region, accepted
):
    environments = with_change(
        "prod",
        region="eu-north-1",
        userService={
            "sesSender": "no-reply@example.com",
            "cognitoEmail": {"sesRegion": ses_region},
        },
    )
    if accepted:
        users = load_environment(environments, "prod").user_service
        assert users is not None and users.cognito_ses_region == ses_region
        return
    with pytest.raises(ConfigError) as error:
        load_environment(environments, "prod")
    assert str(error.value) == (
        "environment 'prod': 'userService.cognitoEmail.sesRegion' 'us-east-2' cannot send for "
        "a user pool in eu-north-1: use eu-north-1 (or, where Cognito allows, one of "
        "us-east-1, us-west-2, eu-west-1)"
    )


def test_packaging_names_functions_to_ship_as_images_and_the_rest_stay_zips():
    config = load_environment(
        with_change("dev", packaging={"notification": "image", "user_service.api": "zip"}), "dev"
    )
    assert config.packaging == {
        "notification": Packaging.CONTAINER_IMAGE,
        "user_service.api": Packaging.ZIP,
    }
    assert load_environment(ENVIRONMENTS, "prod").packaging == {}


@pytest.mark.parametrize(
    ("packaging", "message"),
    [
        (
            {"notifier": "image"},
            "unknown key 'packaging.notifier'; valid keys: backup, env_scheduler, log_processor,"
            " notification, smoke_test, snapshot_cleanup, user_service.api,",
        ),
        ({"backup": "docker"}, "'packaging.backup' 'docker' is not one of zip, image"),
        (["backup"], "'packaging' must be a JSON object, got ['backup']"),
    ],
)
def test_a_bad_packaging_is_named_in_one_line(packaging, message):
    with pytest.raises(ConfigError) as error:
        load_environment(with_change("dev", packaging=packaging), "dev")
    assert str(error.value).startswith(f"environment 'dev': {message}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("environments", "name", "message"),
    [
        (
            with_change("dev", snapshotCleanup={"retentionDays": 0}),
            "dev",
            "'snapshotCleanup.retentionDays' must be a whole number >= 1, got 0",
        ),
        (
            with_change("dev", snapshotCleanup={"minKeepPerVolume": True}),
            "dev",
            "'snapshotCleanup.minKeepPerVolume' must be a whole number >= 0, got True",
        ),
        (
            with_change("dev", snapshotCleanup={"scope": "everything"}),
            "dev",
            "'snapshotCleanup.scope' 'everything' is not one of owned, all",
        ),
        (
            with_change("dev", snapshotCleanup={"schedule": "cron(0 3 * * SUN)"}),
            "dev",
            "'snapshotCleanup.schedule' must be an EventBridge Scheduler expression",
        ),
        (
            with_change("dev", snapshotCleanup={"schedule": "cron(0 3 * * * *)"}),
            "dev",
            "'snapshotCleanup.schedule' must be an EventBridge Scheduler expression",
        ),
        (
            with_change("dev", snapshotCleanup={"schedule": "cron(0 3 ? * ? *)"}),
            "dev",
            "'snapshotCleanup.schedule' must be an EventBridge Scheduler expression",
        ),
        (
            with_change("dev", snapshotCleanup={"schedule": "rate(1 days)"}),
            "dev",
            "'snapshotCleanup.schedule' must be an EventBridge Scheduler expression",
        ),
        (
            with_change("dev", snapshotCleanup={"schedule": "rate(2 day)"}),
            "dev",
            "'snapshotCleanup.schedule' must be an EventBridge Scheduler expression",
        ),
        (
            with_change("dev", snapshotCleanup={"timeZone": "Factory"}),
            "dev",
            "'snapshotCleanup.timeZone' must be an IANA time zone",
        ),
        (
            with_change("dev", snapshotCleanup={"timeZone": "Mars/Olympus"}),
            "dev",
            "'snapshotCleanup.timeZone' must be an IANA time zone",
        ),
        (
            with_change("dev", snapshotCleanup={"enabled": "yes"}),
            "dev",
            "'snapshotCleanup.enabled' must be true or false, got 'yes'",
        ),
        (
            with_change("dev", snapshotCleanup={"retention": 7}),
            "dev",
            "unknown key 'snapshotCleanup.retention'; valid keys:",
        ),
        (
            with_change("dev", snapshotCleanup=[]),
            "dev",
            "'snapshotCleanup' must be a JSON object, got []",
        ),
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
        (
            with_change("dev", environmentScheduler=["19:00"]),
            "dev",
            "'environmentScheduler' must be a JSON object, got ['19:00']",
        ),
        (
            with_change("dev", environmentScheduler={"stopAt": "19:00"}),
            "dev",
            "unknown key 'environmentScheduler.stopAt'; valid keys: ebsKeyArns, reportAt,",
        ),
        (
            with_change("dev", environmentScheduler={"scaleDownAt": "7pm"}),
            "dev",
            "'environmentScheduler.scaleDownAt' must be a 24-hour HH:MM time, got '7pm'",
        ),
        (
            with_change("dev", environmentScheduler={"reportAt": "24:00"}),
            "dev",
            "'environmentScheduler.reportAt' must be a 24-hour HH:MM time, got '24:00'",
        ),
        (
            with_change("dev", environmentScheduler={"weekDays": "weekdays"}),
            "dev",
            "'environmentScheduler.weekDays' must be days such as MON-FRI or MON,WED,FRI",
        ),
        (
            with_change("dev", environmentScheduler={"reportDay": "MON-FRI"}),
            "dev",
            "'environmentScheduler.reportDay' must be one of SUN, MON, TUE, WED, THU, FRI, SAT",
        ),
        (
            with_change("dev", environmentScheduler={"timeZone": "Europe/Londn"}),
            "dev",
            "'environmentScheduler.timeZone' must be an IANA time zone such as Europe/London, "
            "got 'Europe/Londn'",
        ),
        (
            with_change("dev", environmentScheduler={"scaleDownAt": "07:00"}),
            "dev",
            "'environmentScheduler.scaleDownAt' and 'scaleUpAt' are both 07:00",
        ),
        (
            with_change("dev", environmentScheduler={"ebsKeyArns": ["alias/aws/ebs"]}),
            "dev",
            "'environmentScheduler.ebsKeyArns' has 'alias/aws/ebs', which is not a KMS key ARN",
        ),
        (
            with_change("prod", environmentScheduler={"scaleDownAt": "19:00"}),
            "prod",
            "'environmentScheduler.scaleDownAt' has no effect: profile 'prod' does not scale "
            "down off-hours",
        ),
        (
            with_change("dev", webhookSecretName="ops/slack-AbC123"),
            "dev",
            "'webhookSecretName' 'ops/slack-AbC123' ends in '-' and six characters, which "
            "Secrets Manager takes for the suffix of a secret's ARN; rename the secret",
        ),
        (
            with_change("dev", backup={"schedule": "0 2 * * *"}),
            "dev",
            "'backup.schedule' must be an EventBridge Scheduler expression such as "
            "'cron(0 3 ? * SUN *)' or 'rate(7 days)', got '0 2 * * *'",
        ),
        (
            with_change("dev", backup={"timeZone": "Mars/Olympus"}),
            "dev",
            "'backup.timeZone' must be an IANA time zone such as Europe/London, got 'Mars/Olympus'",
        ),
        (
            with_change("dev", backup={"retentionDays": 0}),
            "dev",
            "'backup.retentionDays' must be a whole number >= 1, got 0",
        ),
        (
            with_change("dev", backup={"retentionDays": "7"}),
            "dev",
            "'backup.retentionDays' must be a whole number >= 1, got '7'",
        ),
        (
            with_change("dev", backup={"enabled": "yes"}),
            "dev",
            "'backup.enabled' must be true or false, got 'yes'",
        ),
        (
            with_change("dev", backupRetentionDays=7),
            "dev",
            "unknown key 'backupRetentionDays'; valid keys:",
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
