"""The delivery pipeline: CDK Pipelines promoting the environments through their stages.

Source (a CodeConnections connection), synth (install from the lock files, `make test`,
`make synth PIPELINE=1`), self-mutation, then one stage per environment in the
configured order, each holding exactly the stacks `--context environment=<name>`
deploys. A verification step follows the stages named in `verifyAfter`; in those named
in `approvalBefore`, a manual approval comes between the change set and its execution, so
the approver sees what will change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Aws, Duration, Environment, Stack, Stage, Tags, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import ConfigError, EnvironmentConfig
from stacks.ops_stack import PROJECT, OpsKitStack, compose_environment
from stacks.pipeline_config import PipelineConfig
from stacks.pipeline_findings import acknowledge_pipeline_findings
from stacks.verification import (
    VerificationBatch,
    VerificationTarget,
    verification_batches,
    verification_targets,
)

ROOT = Path(__file__).resolve().parents[1]

SYNTH_INSTALL_COMMANDS = ("make setup",)
"""`.venv` from requirements.txt, the CDK CLI from package-lock.json (`npm ci`), Node 22."""
SYNTH_COMMANDS = ("make test", "make synth PIPELINE=1")
NODE_RUNTIME = {"nodejs": "22"}
"""Every build's Node: CodeBuild's standard image defaults to 18, which is end-of-life (as
is 20), which jsii (synth) no longer supports, and which the unpinned newest cdk-assets (asset
publishing) may leave behind at any release."""
SYNTH_RUNTIMES = {"python": "3.11"}
"""The synth build's runtimes besides every build's Node (CDK Pipelines merges the two)."""
VERIFY_SETUP_MINUTES = 5
"""The verification build's own start (provisioning, install) before the invocations."""
SYNTH_COMPUTE = codebuild.ComputeType.MEDIUM
"""The synth step runs the whole test suite: 4 vCPUs and 7 GB rather than the default
2 vCPUs and 3 GB, which it would use up (pytest runs a worker per core, each with a jsii
runtime and moto)."""


def pinned_cli_version() -> str:
    """The CDK CLI version package-lock.json pins, which self-mutation uses too. Asset
    publishing installs the newest `cdk-assets`, as CDK Pipelines recommends (each release
    reads every older asset manifest); pin it with `cdk_assets_cli_version` where a build
    must not fetch an unpinned tool."""
    lock = json.loads((ROOT / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/aws-cdk"]["version"])


class EnvironmentStage(Stage):
    """One environment as a pipeline stage: the stacks `--context environment=<name>` deploys."""

    def __init__(self, scope: Construct, config: EnvironmentConfig, *, env: Environment) -> None:
        super().__init__(scope, config.name, env=env)
        self.config = config
        self.stack: OpsKitStack = compose_environment(self, config)


class DeliveryPipelineStack(Stack):
    """The pipeline, in its own account and region, deploying every stage from there."""

    def __init__(self, scope: Construct, config: PipelineConfig) -> None:
        super().__init__(
            scope,
            "OpsKitPipeline",
            stack_name=f"{config.name}-pipeline",
            description=f"cdk-opskit delivery pipeline {config.name}: {' -> '.join(config.stages)}",
            env=Environment(account=config.account, region=config.region),
        )
        self.config = config
        for key, value in {"Project": PROJECT, "ManagedBy": "aws-cdk"}.items():
            Tags.of(self).add(key, value)

        self.source = pipelines.CodePipelineSource.connection(
            config.repository, config.branch, connection_arn=config.connection_arn
        )
        self.synth = pipelines.ShellStep(
            "Synth",
            input=self.source,
            install_commands=list(SYNTH_INSTALL_COMMANDS),
            commands=list(SYNTH_COMMANDS),
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_name=config.name,
            pipeline_type=codepipeline.PipelineType.V2,
            synth=self.synth,
            self_mutation=True,
            cross_account_keys=config.cross_account,
            enable_key_rotation=config.cross_account,
            cli_version=pinned_cli_version(),
            publish_assets_in_parallel=False,
            code_build_defaults=pipelines.CodeBuildOptions(
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"phases": {"install": {"runtime-versions": NODE_RUNTIME}}}
                )
            ),
            synth_code_build_defaults=pipelines.CodeBuildOptions(
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"phases": {"install": {"runtime-versions": SYNTH_RUNTIMES}}}
                ),
                build_environment=codebuild.BuildEnvironment(compute_type=SYNTH_COMPUTE),
                timeout=Duration.minutes(30),
            ),
        )

        self.stages: dict[str, EnvironmentStage] = {}
        self.verification_steps: dict[str, list[pipelines.CodeBuildStep]] = {}
        for name in config.stages:
            stage_config = config.stage_config(name)
            account, region = config.target(stage_config)
            stage = EnvironmentStage(
                self, stage_config, env=Environment(account=account, region=region)
            )
            approval = approvals(stage, environment=name) if name in config.approval_before else []
            post: list[pipelines.Step] = []
            if name in config.verify_after:
                self.verification_steps[name] = verification_steps(stage, environment=name)
                post.extend(self.verification_steps[name])
            self.pipeline.add_stage(stage, stack_steps=approval, post=post)
            self.stages[name] = stage
        self.pipeline.build_pipeline()
        self._allow_connection_use()
        acknowledge_pipeline_findings(self.pipeline)

    def _allow_connection_use(self) -> None:
        """CDK grants the source action `codestar-connections:UseConnection`. Connections made
        since the service's rename have `codeconnections` ARNs, and IAM matches an action
        only to resources of its own service prefix: grant that prefix's action too."""
        if ":codeconnections:" not in self.config.connection_arn:
            return
        [role] = [
            construct
            for construct in self.pipeline.node.find_all()
            if isinstance(construct, iam.Role)
            and "/Pipeline/Source/" in construct.node.path
            and construct.node.id == "CodePipelineActionRole"
        ]
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["codeconnections:UseConnection"], resources=[self.config.connection_arn]
            )
        )


def approvals(stage: Stage, *, environment: str) -> list[pipelines.StackSteps]:
    """A manual approval between each stack's change set and its execution, so the approver
    reviews what will change; every stack of the stage waits for one."""
    stacks = [child for child in stage.node.children if isinstance(child, Stack)]
    return [
        pipelines.StackSteps(
            stack=stack,
            change_set=[
                pipelines.ManualApprovalStep(
                    "Approve" if len(stacks) == 1 else f"Approve-{stack.stack_name}",
                    comment=(
                        f"Review the change set of {stack.stack_name}, then promote this "
                        f"change to {environment}?"
                    ),
                )
            ],
        )
        for stack in stacks
    ]


def verification_steps(stage: Stage, *, environment: str) -> list[pipelines.CodeBuildStep]:
    """Builds invoking each smoke-tested alias of the stage's stacks; any function error
    fails them. One build unless the functions' names outgrow what CodePipeline passes one
    action; each may run as long as its invocations may wait, one after another, plus its
    setup.

    Their roles may invoke only the aliases of functions that CloudFormation named after
    the stage's stacks and that carry the environment's tags.
    """
    targets = verification_targets(stage)
    if not targets:
        raise ConfigError(
            f"pipeline: 'verifyAfter' names {environment!r}, whose stacks have no "
            "function with a smoke-test event to verify"
        )
    return [
        verification_step(
            batch, environment=environment, name="Verify" if index == 0 else f"Verify{index + 1}"
        )
        for index, batch in enumerate(verification_batches(targets))
    ]


def verification_step(
    batch: VerificationBatch, *, environment: str, name: str
) -> pipelines.CodeBuildStep:
    return pipelines.CodeBuildStep(
        name,
        commands=batch.commands,
        env_from_cfn_outputs={variable: output for output, variable in batch.variables.items()},
        role_policy_statements=[invoke_statement(environment, batch.targets)],
        timeout=Duration.minutes(math.ceil(batch.read_timeout_seconds / 60) + VERIFY_SETUP_MINUTES),
    )


def invoke_statement(
    environment: str, targets: Sequence[VerificationTarget]
) -> iam.PolicyStatement:
    """lambda:InvokeFunction on the targets' aliases, as far as names known before deploying
    allow: functions named after their stack, tagged with the project and the environment."""
    resources = sorted(
        {
            f"arn:{Aws.PARTITION}:lambda:{target.stack.region}:{target.stack.account}:function:"
            f"{target.stack.stack_name}-*:{target.function.alias.alias_name}"
            for target in targets
        }
    )
    return iam.PolicyStatement(
        actions=["lambda:InvokeFunction"],
        resources=resources,
        conditions={
            "StringEquals": {
                "aws:ResourceTag/Project": PROJECT,
                "aws:ResourceTag/Environment": environment,
            }
        },
    )
