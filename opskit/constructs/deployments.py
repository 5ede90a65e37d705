"""How the OpsFunctions of a stack are deployed: one CodeDeploy application, one service
role and one post-traffic hook for all of them, in the shape AWS SAM gives a template.

Each function keeps its own deployment group, rollback alarm and strategy; what the
stack shares is what only CodeDeploy uses. A hook per function would be a function, role,
policy, log group and async configuration more for each one, and a service role per
function a role and policy more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from opskit.bundling import FUNCTIONS_DIR
from opskit.constructs.compliance import acknowledge
from opskit.constructs.lambda_function import configured_packaging, lambda_function
from opskit.constructs.paths import display_path
from opskit.constructs.per_stack import once_per_stack
from opskit.profile import DeploymentStrategy, EnvironmentProfile

HOOK_TIMEOUT = Duration.minutes(15)
"""Lambda's longest: the hook waits for a target as long as the target may run (the hook
keeps back the time to report its verdict), and is billed only for what it uses."""

SMOKE_TESTS_VARIABLE = "SMOKE_TESTS"
"""The hook's environment: deployment group name -> {function, qualifier, event}."""

HOOK_ENVIRONMENT_BYTES = 3_600
"""What a hook's targets may take of the 4 KB Lambda allows a function's environment,
with names at their longest; past it, the stack gets another hook."""

_LONGEST_NAMES = {"group": 100, "function": 64}
"""CodeDeploy's and Lambda's limits on the names CloudFormation generates."""


class StackDeployments(Construct):
    """What CodeDeploy needs for every OpsFunction of a stack; one per stack (`of`)."""

    def __init__(self, scope: Stack, id: str, *, profile: EnvironmentProfile) -> None:
        super().__init__(scope, id)
        self.profile = profile
        self.application = codedeploy.LambdaApplication(self, "Application")
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=f"CodeDeploy for {display_path(self)}: shifts the stack's aliases, "
            "reads their alarms, runs the hook",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=["*"])
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:DescribeAlarms (read-only) on *, as AWS's own CodeDeploy policy grants "
            "it: a denied alarm poll fails every deployment, and no evidence shows CodeDeploy's "
            "call authorises against the alarm ARN",
        )
        self.hooks: list[SmokeTestHook] = []

    @staticmethod
    def of(scope: Construct, profile: EnvironmentProfile) -> StackDeployments:
        """The stack's, created by the first function that asks (with its profile)."""
        return once_per_stack(
            scope,
            "OpsKitDeployments",
            lambda stack: StackDeployments(stack, "OpsKitDeployments", profile=profile),
        )

    def deploy(
        self,
        scope: Construct,
        *,
        function: lambda_.IFunction,
        alias: lambda_.Alias,
        alias_name: str,
        rollback_alarm: cloudwatch.IAlarm,
        strategy: DeploymentStrategy,
        smoke_test_event: Mapping[str, Any] | None,
    ) -> tuple[codedeploy.LambdaDeploymentGroup, SmokeTestHook | None]:
        """A deployment group (`<scope>/DeploymentGroup`) that shifts `alias` by `strategy`
        and rolls back on `rollback_alarm`; and the hook that runs after traffic has
        shifted, when there is a test event."""
        function_arn = function.function_arn
        alias_arn = f"{function_arn}:{alias_name}"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "lambda:GetAlias",
                    "lambda:UpdateAlias",
                    "lambda:GetProvisionedConcurrencyConfig",
                ],
                resources=[function_arn, alias_arn],
            )
        )
        hook = None
        if smoke_test_event is not None:
            hook = self._hook_with_room_for(smoke_test_event, alias_name)
        # CDK attaches AWSCodeDeployRoleForLambdaLimited to a mutable role, and grants the
        # hook through it; the statements of `role` replace both.
        group = codedeploy.LambdaDeploymentGroup(
            scope,
            "DeploymentGroup",
            application=self.application,
            alias=alias,
            deployment_config=strategy.deployment_config(),
            alarms=[rollback_alarm],
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            role=self.role.without_policy_updates(),
            post_hook=None if hook is None else hook.function,
        )
        if hook is not None and smoke_test_event is not None:
            hook.add_target(
                group,
                function_name=function.function_name,
                alias_name=alias_name,
                alias_arn=alias_arn,
                event=smoke_test_event,
            )
        return group, hook

    def _hook_with_room_for(self, event: Mapping[str, Any], qualifier: str) -> SmokeTestHook:
        needed = SmokeTestHook.bytes_for(event, qualifier)
        if not self.hooks or not self.hooks[-1].has_room_for(needed):
            id = "SmokeTests" if not self.hooks else f"SmokeTests{len(self.hooks) + 1}"
            hook = SmokeTestHook(self, id, profile=self.profile)
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"], resources=[hook.function.function_arn]
                )
            )
            self.hooks.append(hook)
        return self.hooks[-1]


class SmokeTestHook(Construct):
    """The post-traffic hook (`opskit/functions/smoke_test`) of the stack's deployments:
    it asks CodeDeploy which deployment group it was called for, invokes that group's
    alias with the function's test event, and reports the verdict."""

    def __init__(self, scope: Construct, id: str, *, profile: EnvironmentProfile) -> None:
        super().__init__(scope, id)
        self.function, self.role, self.log_group = lambda_function(
            self,
            "Function",
            profile=profile,
            entry=FUNCTIONS_DIR / "smoke_test",
            description=f"Post-traffic smoke tests of the functions of {display_path(self)}",
            environment={},
            timeout=HOOK_TIMEOUT,
            memory_size=128,
            packaging=configured_packaging(self, "smoke_test"),
        )
        # CodeDeploy invokes the hook asynchronously: a retry after a reported verdict would
        # run the smoke test again for a hook that has been answered.
        self.function.configure_async_invoke(retry_attempts=0)
        acknowledge(
            self.function,
            "Serverless-LambdaAsyncFailureDestination",
            "The hook's only output is its verdict to CodeDeploy; a hook that fails to answer "
            "fails the deployment at its timeout, which rolls it back",
        )
        self.targets: dict[str, dict[str, Any]] = {}
        """By deployment group name (a token until deployment)."""
        self._bytes = 0

    @staticmethod
    def bytes_for(event: Mapping[str, Any], qualifier: str) -> int:
        """A target's share of the environment, with the generated names at their longest."""
        entry = {
            "function": "f" * _LONGEST_NAMES["function"],
            "qualifier": qualifier,
            "event": event,
        }
        return len(
            json.dumps({"g" * _LONGEST_NAMES["group"]: entry}, separators=(",", ":")).encode()
        )

    def has_room_for(self, needed: int) -> bool:
        return self._bytes + needed <= HOOK_ENVIRONMENT_BYTES

    def add_target(
        self,
        group: codedeploy.LambdaDeploymentGroup,
        *,
        function_name: str,
        alias_name: str,
        alias_arn: str,
        event: Mapping[str, Any],
    ) -> None:
        """Smoke-tests the deployments of `group`: invokes the alias with `event`."""
        self.targets[group.deployment_group_name] = {
            "function": function_name,
            "qualifier": alias_name,
            "event": dict(event),
        }
        self._bytes += self.bytes_for(event, alias_name)
        self.function.add_environment(
            SMOKE_TESTS_VARIABLE, json.dumps(self.targets, separators=(",", ":"))
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[alias_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["codedeploy:GetDeployment"], resources=[group.deployment_group_arn]
            )
        )
