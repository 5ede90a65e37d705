"""Scanner findings on what CDK Pipelines generates, acknowledged only where understood.

CDK Pipelines writes the pipeline's roles, projects and bucket itself. Each IAM statement
is matched against the kinds below; the wildcard findings (cdk-nag AwsSolutions-IAM5) of a
statement of a known kind are acknowledged on that policy with the kind's reason. A
statement of no known kind keeps its findings, so a new grant in a later CDK release
fails the scans until someone reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_cdk import Stack, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam

from opskit.constructs.compliance import acknowledge

Statement = dict[str, Any]
AWS_MANAGED_S3_KEY = "alias/aws/s3"


def flatten(reference: Any) -> str:
    """A resolved CloudFormation value as cdk-nag names it in a finding (`<Bucket.Arn>/*`)."""
    if isinstance(reference, str):
        return reference.replace("${", "<").replace("}", ">")
    if isinstance(reference, dict):
        if "Fn::Join" in reference:
            delimiter, items = reference["Fn::Join"]
            return str(delimiter).join(flatten(item) for item in items)
        if "Fn::Sub" in reference:
            return flatten(reference["Fn::Sub"])
        if "Fn::GetAtt" in reference:
            resource, attribute = reference["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in reference:
            return flatten(reference["Fn::ImportValue"])
        if "Ref" in reference:
            return f"<{flatten(reference['Ref'])}>"
    return json.dumps(reference, separators=(",", ":"))


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def wildcard_findings(statement: Statement) -> set[str]:
    """The AwsSolutions-IAM5 findings of one statement."""
    if statement.get("Effect") != "Allow":
        return set()
    actions = {f"Action::{a}" for a in listed(statement.get("Action", [])) if "*" in a}
    resources = {
        f"Resource::{flat}"
        for flat in map(flatten, listed(statement.get("Resource", [])))
        if "*" in flat
    }
    return actions | resources


@dataclass(frozen=True)
class Kind:
    """A kind of statement CDK Pipelines generates, and why its wildcards are acceptable."""

    reason: str
    matches: Callable[[Statement, list[str], list[str]], bool]


def known_kinds(artifact_arns: set[str]) -> list[Kind]:
    """`artifact_arns`: the artifacts bucket's and its key's ARNs, flattened."""

    def only(actions: list[str], allowed: set[str]) -> bool:
        return set(actions) <= allowed

    return [
        Kind(
            "CDK's grant on the pipeline's own artifacts bucket and key: every action reads "
            "its input artifacts and writes its outputs there (object keys vary per execution)",
            lambda _, actions, resources: all(
                r in artifact_arns or r.removesuffix("/*") in artifact_arns for r in resources
            ),
        ),
        Kind(
            "CodeBuild creates a log stream per build in the project's own log group, "
            "/aws/codebuild/<project>; the asset-publishing role serves every asset project",
            lambda _, actions, resources: (
                only(actions, {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"})
                and all(":log-group:/aws/codebuild/" in r for r in resources)
            ),
        ),
        Kind(
            "CodeBuild creates test report groups at run time under the project's name",
            lambda _, actions, resources: all(":report-group/" in r for r in resources),
        ),
        Kind(
            "Self-mutation runs `cdk deploy` of this stack, which reads stack states and "
            "lists bootstrap buckets it discovers at run time: read-only calls",
            lambda _, actions, resources: only(
                actions, {"cloudformation:DescribeStacks", "s3:ListBucket"}
            ),
        ),
        Kind(
            "Only the CDK bootstrap roles (deploy, file and image publishing, tagged "
            "aws-cdk:bootstrap-role) of the stage accounts, named by each account's qualifier",
            lambda statement, actions, _: (
                actions == ["sts:AssumeRole"]
                and "iam:ResourceTag/aws-cdk:bootstrap-role"
                in json.dumps(statement.get("Condition"))
            ),
        ),
        Kind(
            "The asset-publishing role is shared by the CodeBuild projects CDK Pipelines "
            "creates per asset, known only when it builds them; it starts and reads builds",
            lambda _, actions, resources: only(
                actions, {"codebuild:BatchGetBuilds", "codebuild:StartBuild", "codebuild:StopBuild"}
            ),
        ),
        Kind(
            "Function names are generated by CloudFormation at deploy time: only the aliases "
            "of functions named after the stage's stacks and tagged with its Project and "
            "Environment",
            lambda statement, actions, _: (
                actions == ["lambda:InvokeFunction"]
                and "aws:ResourceTag/Environment" in json.dumps(statement.get("Condition"))
            ),
        ),
    ]


def acknowledge_policy(policy: iam.CfnPolicy, kinds: list[Kind]) -> None:
    document = Stack.of(policy).resolve(policy.policy_document)
    reasons: dict[str, str] = {}
    unexplained: set[str] = set()
    for statement in document.get("Statement", []):
        findings = wildcard_findings(statement)
        if not findings:
            continue
        actions = listed(statement.get("Action", []))
        resources = [flatten(r) for r in listed(statement.get("Resource", []))]
        kind = next((k for k in kinds if k.matches(statement, actions, resources)), None)
        if kind is None:
            unexplained |= findings
            continue
        for finding in findings:
            reasons.setdefault(finding, kind.reason)
    for finding, reason in sorted(reasons.items()):
        if finding not in unexplained:
            acknowledge(policy, f"AwsSolutions-IAM5[{finding}]", reason)
    if any("asset-publishing" in reason for reason in reasons.values()):
        acknowledge(policy, "CKV_AWS_111", next(r for r in reasons.values() if "asset" in r))


def acknowledge_pipeline_findings(pipeline: pipelines.CodePipeline) -> None:
    """Acknowledges the understood findings on the resources CDK Pipelines generated under
    `pipeline` (built); the stages' stacks acknowledge their own."""
    stack = Stack.of(pipeline)
    artifact_bucket = pipeline.pipeline.artifact_bucket
    arns = {f"<{stack.get_logical_id(artifact_bucket.node.default_child)}.Arn>"}  # type: ignore[arg-type]
    if artifact_bucket.encryption_key is not None:
        key = artifact_bucket.encryption_key.node.default_child
        arns.add(f"<{stack.get_logical_id(key)}.Arn>")  # type: ignore[arg-type]
    kinds = known_kinds(arns)
    for construct in pipeline.node.find_all():
        if isinstance(construct, iam.CfnPolicy):
            acknowledge_policy(construct, kinds)
        elif isinstance(construct, codebuild.CfnProject) and stack.resolve(
            construct.encryption_key
        ) in (None, AWS_MANAGED_S3_KEY):
            acknowledge(
                construct,
                "AwsSolutions-CB4",
                "Every stage is in the pipeline's account, so the artifacts bucket and the "
                "builds use S3's AWS-managed KMS key; a stage in another account brings a "
                "customer-managed key (cross_account_keys) that the projects then use",
            )
        elif isinstance(construct, codepipeline.CfnPipeline):
            acknowledge(
                construct,
                "E3703",
                "CDK Pipelines writes the CloudFormation actions' RoleArn as Fn::Join of the "
                "partition and the bootstrap role name: the same ARN an Fn::Sub would give",
            )
    bucket = artifact_bucket.node.default_child
    acknowledge(
        bucket,  # type: ignore[arg-type]
        ("AwsSolutions-S1", "CKV_AWS_18"),
        "Holds only the pipeline's transient artifacts, read and written by its own roles; "
        "CloudTrail records the pipeline's and the roles' API calls",
    )
    acknowledge(
        bucket,  # type: ignore[arg-type]
        "CKV_AWS_21",
        "Artifacts are written once per execution under new keys; versions would only keep "
        "copies of build outputs that the repository and the pipeline can reproduce",
    )
