"""The delivery pipeline (`--context pipeline=true`): its stages and steps, what its roles may
do, encryption, the stage stacks against `--context environment=<name>`, and the scanners.

Two pipelines are synthesized, once each for the module: the committed cdk.json (every
stage in the pipeline's account) and one whose staging and prod name other accounts.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import botocore.session
import pytest
import yaml
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template

from stacks.app import build, project_settings
from stacks.pipeline import (
    DeliveryPipelineStack,
    approvals,
    pinned_cli_version,
)
from stacks.pipeline_findings import acknowledge_policy, known_kinds
from stacks.verification import (
    OUTPUT_ID,
)
from tests.scanners import cfn_lint, checkov, checkov_results, synthesize_with_rule_packs
from tests.synth import CDK_CONTEXT, ROOT, as_list, cfn_resource, listed_names, make_app, only

PIPELINE_ACCOUNT = "111111111111"
REGION = "eu-west-1"
NOTIFIER_SMOKE_EVENT = '{"opskit": {"smokeTest": true}}'


@dataclass
class Delivery:
    stack: DeliveryPipelineStack
    template: dict[str, Any]
    template_files: list[Path]
    report: dict[str, Any]
    acknowledgements: list[tuple[Any, dict[str, str]]]

    def resources(self, type_: str) -> dict[str, Any]:
        return {k: r for k, r in self.template["Resources"].items() if r["Type"] == type_}

    def stages(self) -> dict[str, list[dict[str, Any]]]:
        """Pipeline stage name -> its actions in run order."""
        pipeline = only(self.resources("AWS::CodePipeline::Pipeline"))["Properties"]
        return {
            stage["Name"]: sorted(stage["Actions"], key=lambda a: a.get("RunOrder", 1))
            for stage in pipeline["Stages"]
        }

    def project(self, logical_id: str) -> dict[str, Any]:
        return self.template["Resources"][logical_id]["Properties"]

    def buildspec(self, action: dict[str, Any]) -> dict[str, Any]:
        """The action's build spec: inline JSON, or a file in the assembly (asset publishing)."""
        spec = self.project(action["Configuration"]["ProjectName"]["Ref"])["Source"]["BuildSpec"]
        if spec.startswith("buildspec-"):
            return yaml.safe_load((self.template_files[0].parent / spec).read_text())  # type: ignore[no-any-return]
        return json.loads(spec)  # type: ignore[no-any-return]

    def statements(self, role_logical_id: str) -> list[dict[str, Any]]:
        return [
            statement
            for policy in self.resources("AWS::IAM::Policy").values()
            if {"Ref": role_logical_id} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]


def notifier_verification(delivery: Delivery, verify: dict[str, Any]) -> tuple[str, int, str]:
    """The variable listing the functions, the deployment notifier's position in it, and the
    command invoking the notifier."""
    [command] = [
        c
        for c in delivery.buildspec(verify)["phases"]["build"]["commands"]
        if "/DeploymentNotifier/Notifier:" in c
    ]
    variable = command.split('echo "$', 1)[1].split('"', 1)[0]
    position = int(command.split("awk '{print $", 1)[1].split("}", 1)[0])
    return variable, position, command


def verification_outputs(delivery: Delivery, name: str) -> dict[str, list[Any]]:
    """The stage's outputs listing its smoke-tested functions: output id -> their names."""
    return {
        output_id: listed_names(output)
        for output_id, output in stage_template(delivery, name)["Outputs"].items()
        if OUTPUT_ID in output_id
    }


def stage_template(delivery: Delivery, name: str) -> Mapping[str, Any]:
    return Template.from_stack(delivery.stack.stages[name].stack).to_json()


def synthesize(app: cdk.App, settings: dict[str, Any] | None = None) -> Delivery:
    stack = build(app, settings=settings)
    assert isinstance(stack, DeliveryPipelineStack)
    report = synthesize_with_rule_packs(app, stack)
    outdir = Path(app.outdir)
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    return Delivery(
        stack=stack,
        template=json.loads((outdir / stack.template_file).read_text()),
        template_files=[outdir / stack.template_file, *outdir.glob("assembly-*/*.template.json")],
        report=report,
        acknowledgements=[
            (construct, entry.data)
            for construct in app.node.find_all()
            for entry in construct.node.metadata
            if entry.type == key
        ],
    )


def lean_environments() -> dict[str, Any]:
    """cdk.json's environments without the user service, the largest capability, to keep
    the synthesis short: the pipeline around a stage does not depend on what the stage
    holds (tests/test_user_service.py checks it in a pinned stack, as a stage has it)."""
    environments = copy.deepcopy(CDK_CONTEXT["environments"])
    for environment in environments.values():
        environment.pop("userService", None)
    return environments


def cross_account_context() -> tuple[dict[str, Any], dict[str, Any]]:
    """Staging and prod in accounts of their own; dev, in the pipeline's, watches `api`."""
    environments = lean_environments()
    environments["dev"].update(account=PIPELINE_ACCOUNT, region=REGION, pipelines=["api"])
    environments["staging"].update(account="222222222222", region=REGION)
    environments["prod"].update(account="333333333333", region=REGION)
    settings = project_settings()
    settings["pipeline"]["notifierEnvironment"] = "dev"
    return environments, settings


@pytest.fixture(scope="module")
def delivery() -> Delivery:
    return synthesize(make_app(pipeline="true", environments=lean_environments(), validate=True))


@pytest.fixture(scope="module")
def cross_account() -> Delivery:
    environments, settings = cross_account_context()
    return synthesize(make_app(pipeline="true", environments=environments), settings)


def test_source_build_self_mutation_assets_then_every_environment_in_order(delivery):
    assert list(delivery.stages()) == [
        "Source",
        "Build",
        "UpdatePipeline",
        "Assets",
        "dev",
        "staging",
        "prod",
    ]
    [source] = delivery.stages()["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    settings = project_settings()["pipeline"]
    assert source["Configuration"]["ConnectionArn"] == settings["connectionArn"]
    assert source["Configuration"]["FullRepositoryId"] == settings["repository"]
    assert source["Configuration"]["BranchName"] == settings["branch"]
    pipeline = only(delivery.resources("AWS::CodePipeline::Pipeline"))["Properties"]
    assert (pipeline["Name"], pipeline["PipelineType"]) == ("opskit", "V2")


def test_one_action_publishes_every_asset_and_builds_stop_at_their_time_limits(delivery):
    """Publishing in parallel would make a CodeBuild project per asset (nine here); the
    verification may wait out every function it invokes, one after another."""
    stages = delivery.stages()
    assert [action["Name"] for action in stages["Assets"]] == ["FileAssets"]
    [synth] = stages["Build"]
    verify = stages["staging"][-1]
    project = delivery.project
    assert project(synth["Configuration"]["ProjectName"]["Ref"])["TimeoutInMinutes"] == 30
    waits = [
        int(command.split("--cli-read-timeout ", 1)[1].split()[0])
        for command in delivery.buildspec(verify)["phases"]["build"]["commands"]
    ]
    verify_minutes = project(verify["Configuration"]["ProjectName"]["Ref"])["TimeoutInMinutes"]
    assert verify_minutes == -(-sum(waits) // 60) + 5, "every invocation's wait, then setup"


def test_every_build_selects_node_22_over_the_images_default_18(delivery):
    """Synth (jsii), self-mutation (the CDK CLI) and asset publishing (cdk-assets) all need
    a Node that is not end-of-life."""
    builds = {
        action["Name"]: delivery.buildspec(action)
        for actions in delivery.stages().values()
        for action in actions
        if action["ActionTypeId"]["Provider"] == "CodeBuild"
    }
    assert {"Synth", "SelfMutate", "FileAssets", "Verify"} <= set(builds)
    assert {
        name: spec["phases"]["install"]["runtime-versions"]["nodejs"]
        for name, spec in builds.items()
    } == dict.fromkeys(builds, "22")


def test_the_source_action_may_use_the_connection_under_both_service_prefixes(delivery):
    """Connections made since the rename have codeconnections ARNs, which IAM matches only
    to codeconnections actions; CDK grants the codestar-connections one."""
    [source] = delivery.stages()["Source"]
    arn = project_settings()["pipeline"]["connectionArn"]
    assert ":codeconnections:" in arn
    granted = [
        action
        for statement in delivery.statements(source["RoleArn"]["Fn::GetAtt"][0])
        if statement["Resource"] == arn
        for action in as_list(statement["Action"])
    ]
    assert sorted(granted) == [
        "codeconnections:UseConnection",
        "codestar-connections:UseConnection",
    ]


def test_prods_change_set_waits_for_a_manual_approval_and_no_other_stage_does(delivery):
    """The approver sees the change set that approving executes."""
    stages = delivery.stages()
    approvals = {
        name: [a["Name"] for a in actions if a["ActionTypeId"]["Category"] == "Approval"]
        for name, actions in stages.items()
    }
    assert {name: found for name, found in approvals.items() if found} == {"prod": ["Approve"]}
    prepare, approve, execute = stages["prod"]
    assert prepare["Configuration"]["ActionMode"] == "CHANGE_SET_REPLACE"
    assert approve["ActionTypeId"]["Provider"] == "Manual"
    assert execute["Configuration"]["ActionMode"] == "CHANGE_SET_EXECUTE"
    assert prepare["RunOrder"] < approve["RunOrder"] < execute["RunOrder"]
    assert prepare["Configuration"]["ChangeSetName"] == execute["Configuration"]["ChangeSetName"]
    assert "change set of opskit-prod" in approve["Configuration"]["CustomData"]


def test_every_stack_of_an_approved_stage_waits_for_its_own_approval():
    app = make_app()
    stage = cdk.Stage(app, "prod")
    for name in ("opskit-prod", "opskit-prod-data"):
        cdk.Stack(stage, name, stack_name=name)

    steps = approvals(stage, environment="prod")

    assert [(s.stack.stack_name, [a.id for a in s.change_set or []]) for s in steps] == [
        ("opskit-prod", ["Approve-opskit-prod"]),
        ("opskit-prod-data", ["Approve-opskit-prod-data"]),
    ]


def test_after_staging_a_verification_step_invokes_each_function_its_stack_output_names(
    delivery,
):
    stages = delivery.stages()
    *deploy, verify = stages["staging"]
    assert verify["Name"] == "Verify" and verify["ActionTypeId"]["Provider"] == "CodeBuild"
    assert all(action["RunOrder"] < verify["RunOrder"] for action in deploy)
    [execute] = [a for a in deploy if a["Configuration"]["ActionMode"] == "CHANGE_SET_EXECUTE"]
    variables = json.loads(verify["Configuration"]["EnvironmentVariables"])
    [(output_id, functions)] = verification_outputs(delivery, "staging").items()
    assert len(functions) >= 5, "every smoke-tested function of the stage is verified"
    assert variables == [
        {
            "name": "TARGETS_0",
            "type": "PLAINTEXT",
            "value": f"#{{{execute['Namespace']}.{output_id}}}",
        }
    ]
    commands = delivery.buildspec(verify)["phases"]["build"]["commands"]
    assert len(commands) == len(functions)
    variable, position, command = notifier_verification(delivery, verify)
    assert variable == "TARGETS_0"
    assert functions[position - 1]["Ref"].startswith("DeploymentNotifierFunction")
    assert (
        f'--region {REGION} --function-name "arn:aws:lambda:{REGION}:{PIPELINE_ACCOUNT}:function:'
        '$function:STAGING"'
    ) in command
    assert f"--payload '{NOTIFIER_SMOKE_EVENT}'" in command
    for name in ("dev", "prod"):
        assert [a["Name"] for a in stages[name] if a["Name"] == "Verify"] == []


def test_every_action_configuration_value_fits_codepipelines_1000_characters(delivery):
    """CodePipeline refuses a longer value at deploy time; nothing else checks it."""
    too_long = [
        (stage, action["Name"], key, len(value))
        for stage, actions in delivery.stages().items()
        for action in actions
        for key, value in action.get("Configuration", {}).items()
        if isinstance(value, str) and len(value) > 1000
    ]
    assert too_long == []


@pytest.mark.parametrize("variant", ["delivery", "cross_account"])
def test_the_verification_configuration_fits_1000_characters_with_the_longest_names(
    request: pytest.FixtureRequest, variant: str
) -> None:
    """CodePipeline may count a variable at its resolved length: each output at its longest,
    every function name of Lambda's 64 characters, must still fit."""
    delivery: Delivery = request.getfixturevalue(variant)
    [verify] = [a for a in delivery.stages()["staging"] if a["Name"] == "Verify"]
    configuration = verify["Configuration"]["EnvironmentVariables"]
    outputs = verification_outputs(delivery, "staging")

    def longest(reference: re.Match[str]) -> str:
        return " ".join(["f" * 64] * len(outputs[reference.group(1)]))

    resolved = re.sub(r"#\{[^.}]+\.([A-Za-z0-9]+)\}", longest, configuration)
    assert resolved != configuration, "the configuration reads the stage's outputs"
    assert len(resolved) <= 1000


def test_the_verification_role_may_invoke_only_the_stage_aliases_of_its_tagged_functions(
    delivery,
):
    [verify] = [a for a in delivery.stages()["staging"] if a["Name"] == "Verify"]
    role = delivery.project(verify["Configuration"]["ProjectName"]["Ref"])["ServiceRole"]
    lambda_statements = [
        s for s in delivery.statements(role["Fn::GetAtt"][0]) if "lambda:" in json.dumps(s)
    ]
    assert lambda_statements == [
        {
            "Action": "lambda:InvokeFunction",
            "Condition": {
                "StringEquals": {
                    "aws:ResourceTag/Project": "cdk-opskit",
                    "aws:ResourceTag/Environment": "staging",
                }
            },
            "Effect": "Allow",
            "Resource": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        f":lambda:{REGION}:{PIPELINE_ACCOUNT}:function:opskit-staging-*:STAGING",
                    ],
                ]
            },
        }
    ]


def lambda_invoke_function_name() -> str:
    """The pattern of the FunctionName Lambda's Invoke takes, from botocore's service model."""
    invoke = botocore.session.get_session().get_service_model("lambda").operation_model("Invoke")
    return str(invoke.input_shape.members["FunctionName"].metadata["pattern"])


@pytest.fixture
def fake_aws(tmp_path) -> Path:
    """An `aws` that records its arguments, writes the response file (its last argument) and
    prints what `--query FunctionError --output text` would: $FUNCTION_ERROR."""
    script = tmp_path / "bin" / "aws"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$@" > "$AWS_ARGS"\n'
        'for last; do :; done; printf \'{"statusCode": 200}\' > "$last"\n'
        'echo "$FUNCTION_ERROR"; exit "${AWS_EXIT:-0}"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def run_with_fake_aws(
    command: str, fake_aws: Path, tmp_path: Path, variables: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """A verification command run by sh, the fake `aws` first on PATH, recording its
    arguments in tmp_path/args."""
    env = {
        **os.environ,
        "PATH": f"{fake_aws.parent}{os.pathsep}{os.environ['PATH']}",
        "AWS_ARGS": str(tmp_path / "args"),
        **variables,
    }
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("function_error", "aws_exit", "passes"),
    [("None", 0, True), ("Unhandled", 0, False), ("", 255, False)],
    ids=["no-function-error", "function-error", "invoke-denied"],
)
def test_the_verification_command_passes_only_when_the_alias_answers_without_error(
    delivery, fake_aws, tmp_path, function_error, aws_exit, passes
):
    [verify] = [a for a in delivery.stages()["staging"] if a["Name"] == "Verify"]
    variable, position, command = notifier_verification(delivery, verify)
    name = "opskit-staging-DeploymentNotifierFunction-Ab12Cd34Ef56"
    others = [f"opskit-staging-Other{n}-Ab12Cd34Ef56" for n in range(9)]
    listed = [*others[: position - 1], name, *others[position - 1 :]]
    result = run_with_fake_aws(
        command,
        fake_aws,
        tmp_path,
        {variable: " ".join(listed), "FUNCTION_ERROR": function_error, "AWS_EXIT": str(aws_exit)},
    )
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:6] == [
        "lambda",
        "invoke",
        "--region",
        REGION,
        "--function-name",
        f"arn:aws:lambda:{REGION}:{PIPELINE_ACCOUNT}:function:{name}:STAGING",
    ]
    assert re.fullmatch(lambda_invoke_function_name(), args[5]), "a FunctionName Invoke takes"
    assert args[args.index("--payload") + 1] == NOTIFIER_SMOKE_EVENT
    if function_error == "Unhandled":
        assert "function error Unhandled" in result.stderr


def test_the_verification_command_fails_when_the_output_lists_fewer_functions(
    delivery, fake_aws, tmp_path
):
    [verify] = [a for a in delivery.stages()["staging"] if a["Name"] == "Verify"]
    variable, position, command = notifier_verification(delivery, verify)
    listed = " ".join(f"opskit-staging-F{n}-Ab12Cd34Ef56" for n in range(position - 1))
    result = run_with_fake_aws(
        command, fake_aws, tmp_path, {variable: listed, "FUNCTION_ERROR": "None"}
    )
    assert result.returncode != 0
    assert not (tmp_path / "args").exists(), "nothing was invoked"


def test_synth_installs_from_the_lock_files_runs_the_tests_then_synthesizes_the_pipeline(
    delivery,
):
    [synth] = delivery.stages()["Build"]
    spec = delivery.buildspec(synth)
    assert spec["phases"]["install"]["commands"] == ["make setup"]
    assert spec["phases"]["build"]["commands"] == ["make test", "make synth PIPELINE=1"]
    assert spec["phases"]["install"]["runtime-versions"] == {"python": "3.11", "nodejs": "22"}
    project = delivery.project(synth["Configuration"]["ProjectName"]["Ref"])
    assert project["Environment"]["ComputeType"] == "BUILD_GENERAL1_MEDIUM"
    assert spec["artifacts"]["base-directory"] == "cdk.out"
    setup = subprocess.run(
        ["make", "-n", "-B", "setup"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "npm ci " in setup and "-r requirements.txt" in setup
    synth_command = subprocess.run(
        ["make", "-n", "synth", "PIPELINE=1"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "cdk synth --context pipeline=true --quiet" in synth_command


def test_the_pipeline_updates_itself_with_the_pinned_cdk_cli(delivery):
    [mutate] = delivery.stages()["UpdatePipeline"]
    commands = delivery.buildspec(mutate)["phases"]
    assert commands["install"]["commands"] == [f"npm install -g aws-cdk@{pinned_cli_version()}"]
    assert commands["build"]["commands"] == [
        "cdk -a . deploy OpsKitPipeline --require-approval=never --verbose"
    ]
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert pinned_cli_version() == lock["packages"]["node_modules/aws-cdk"]["version"]


def test_artifacts_are_encrypted_with_s3s_kms_key_when_every_stage_is_the_pipelines_account(
    delivery,
):
    bucket = only(delivery.resources("AWS::S3::Bucket"))["Properties"]
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms"}
    assert delivery.resources("AWS::KMS::Key") == {}
    assert all(v is True for v in bucket["PublicAccessBlockConfiguration"].values())
    policy = only(delivery.resources("AWS::S3::BucketPolicy"))["Properties"]["PolicyDocument"]
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_stages_in_other_accounts_get_a_rotating_customer_key_for_the_artifacts(cross_account):
    key = only(cross_account.resources("AWS::KMS::Key"))
    assert key["Properties"]["EnableKeyRotation"] is True
    bucket = only(cross_account.resources("AWS::S3::Bucket"))["Properties"]
    [rule] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"][0] in (
        cross_account.resources("AWS::KMS::Key")
    )
    deploy_roles = {
        json.dumps(action["RoleArn"])
        for name in ("staging", "prod")
        for action in cross_account.stages()[name]
        if action["ActionTypeId"]["Category"] == "Deploy"
    }
    assert len(deploy_roles) == 2
    assert all("cdk-hnb659fds-deploy-role-" in role for role in deploy_roles)
    assert {account for role in deploy_roles for account in re.findall(r"iam::(\d{12})", role)} == {
        "222222222222",
        "333333333333",
    }


def normalised(template: Mapping[str, Any], stage_path: str) -> str:
    """The template without what CDK derives from the stage's construct-path prefix: the ids
    of the invoke permissions of EventBridge, SNS and API Gateway, and of the API's
    deployment (a hash over its methods and their permissions)."""
    text = json.dumps(template, sort_keys=True, indent=1).replace(stage_path, "")
    text = re.sub(r"(AllowEventRule|AllowInvoke|ApiPermission)[A-Za-z0-9]+", r"\1<path>", text)
    return re.sub(r"(ApiDeployment[0-9A-F]{8})[0-9a-f]{32}", r"\1<hash>", text)


def test_each_stage_holds_the_stacks_that_environment_context_deploys(cross_account):
    """The same composition code serves both paths: each stage holds the stack of the same
    name, and prod's template is the one `--context environment=prod` synthesizes."""
    environments, settings = cross_account_context()
    for name, stage in cross_account.stack.stages.items():
        stacks = [s.stack_name for s in stage.node.children if isinstance(s, cdk.Stack)]
        assert stacks == [f"opskit-{name}"]
    by_hand = build(make_app(environment="prod", environments=environments), settings=settings)
    stage = cross_account.stack.stages["prod"]
    staged = stage_template(cross_account, "prod")
    plain = Template.from_stack(by_hand).to_json()
    assert len(staged["Resources"]) == len(plain["Resources"]) > 30
    assert normalised(staged, f"{stage.node.path}/") == normalised(plain, "")


def test_the_pipeline_accounts_notifier_reports_this_pipeline(cross_account, delivery):
    def watched(delivery: Delivery, name: str) -> Any:
        template = stage_template(delivery, name)
        rule = only(
            {
                k: r
                for k, r in template["Resources"].items()
                if r["Type"] == "AWS::Events::Rule"
                and r["Properties"]["EventPattern"]["source"] == ["aws.codepipeline"]
            }
        )
        return rule["Properties"]["EventPattern"].get("detail", {}).get("pipeline")

    assert watched(cross_account, "dev") == ["api", "opskit"]
    assert watched(cross_account, "staging") is None, "other accounts never see its events"
    assert watched(delivery, "prod") is None, "an empty list already watches every pipeline"


def test_a_stage_verified_from_another_account_lets_that_account_invoke_its_aliases(
    cross_account, delivery
):
    def invokers(delivery: Delivery, name: str) -> list[str]:
        return [
            r["Properties"]["Principal"]
            for r in stage_template(delivery, name)["Resources"].values()
            if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"].isdigit()
        ]

    [verified] = verification_outputs(cross_account, "staging").values()
    assert invokers(cross_account, "staging") == [PIPELINE_ACCOUNT] * len(verified)
    assert invokers(cross_account, "prod") == [], "prod is not verified by the pipeline"
    assert invokers(delivery, "staging") == [], "the same account needs no resource policy"
    [verify] = [a for a in cross_account.stages()["staging"] if a["Name"] == "Verify"]
    commands = cross_account.buildspec(verify)["phases"]["build"]["commands"]
    assert len(commands) == len(verified)
    alias_arn = f"arn:aws:lambda:{REGION}:222222222222:function:$function:STAGING"
    assert all(f'--function-name "{alias_arn}"' in c for c in commands)


@pytest.mark.parametrize("variant", ["delivery", "cross_account"])
def test_cdk_nag_reports_nothing_unacknowledged_and_every_acknowledgement_has_a_reason(
    request: pytest.FixtureRequest, variant: str
) -> None:
    delivery: Delivery = request.getfixturevalue(variant)
    failures = [
        f"{violation['ruleName']} at {c['constructPath']}"
        for plugin in delivery.report["pluginReports"]
        for violation in plugin.get("violations", [])
        for c in violation["violatingConstructs"]
    ]
    assert failures == []
    stage_paths = tuple(f"{stage.node.path}/" for stage in delivery.stack.stages.values())
    pipeline_acks = [
        (c, data)
        for c, data in delivery.acknowledgements
        if not c.node.path.startswith(stage_paths)
    ]
    assert pipeline_acks, "CDK Pipelines' generated roles need reasoned acknowledgements"
    for construct, data in delivery.acknowledgements:
        assert not isinstance(construct, cdk.Stack | cdk.Stage), construct.node.path
        for rule, reason in data.items():
            assert len(reason) > 40, f"{construct.node.path}: {rule}"


def test_cfn_lint_and_checkov_pass_both_pipelines(delivery, cross_account, scan_cache):
    """The stage stacks are the environment stacks tests/test_environments.py scans;
    `make scan` scans every template of the pipeline's assembly, stages included."""
    files = [delivery.template_files[0], cross_account.template_files[0]]
    linting, scanning = cfn_lint(files, scan_cache), checkov(files, scan_cache)
    returncode, stdout, stderr = linting.result()
    assert returncode == 0, stdout + stderr
    results = checkov_results(scanning)
    assert [(c["check_id"], c["resource"]) for c in results["failed_checks"]] == []
    scanned = {Path(c["file_path"]).name for c in results["passed_checks"]}
    assert scanned == {f.name for f in files}


def test_a_wildcard_grant_of_no_known_kind_stays_reported_beside_an_acknowledged_one():
    """Acknowledgements are earned statement by statement: an unexplained wildcard stays."""
    app = make_app()
    stack = cdk.Stack(app, "Grants")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=["*"]))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:PutLogEvents"],
            resources=["arn:aws:logs:eu-west-1:111111111111:log-group:/aws/codebuild/x:*"],
        )
    )
    acknowledge_policy(
        cfn_resource(role.node.find_child("DefaultPolicy"), iam.CfnPolicy), known_kinds(set())
    )

    report = synthesize_with_rule_packs(app, stack)

    wildcards = {
        violation["ruleName"]
        for plugin in report["pluginReports"]
        for violation in plugin.get("violations", [])
        if violation["ruleName"].startswith("AwsSolutions-IAM5")
    }
    assert wildcards == {"AwsSolutions-IAM5[Resource::*]"}
