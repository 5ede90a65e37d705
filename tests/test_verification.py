"""Verifying a stage (`stacks/verification.py`): which functions, the outputs that list
them and the builds that read those, each within CodePipeline's 1,000 characters at the
longest names, and the command each alias is invoked with.

The committed pipeline's own verification is specified in tests/test_pipeline.py; these
build small stages of their own, so they run beside that module's syntheses.
"""

from __future__ import annotations

import json
import re

import aws_cdk as cdk
import pytest
from aws_cdk import pipelines
from aws_cdk.assertions import Template
from constructs import Construct

from opskit import DEV, OpsFunction
from opskit.bundling import FUNCTIONS_DIR
from stacks.app import project_settings
from stacks.config import ConfigError
from stacks.pipeline import verification_steps
from stacks.verification import (
    FUNCTIONS_PER_OUTPUT,
    configuration_length,
    listed_length,
    reference_length,
)
from tests.synth import listed_names, make_app, only

PIPELINE_ACCOUNT = "111111111111"
REGION = "eu-west-1"


def test_the_verification_step_finds_every_smoke_tested_function_of_the_stage():
    """Capabilities added later are verified without touching the pipeline."""
    app = make_app()
    stage = cdk.Stage(app, "qa", env=cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION))
    stack = cdk.Stack(stage, "Stack", stack_name="opskit-qa")
    entry = FUNCTIONS_DIR / "notification"
    OpsFunction(stack, "Checked", entry=entry, profile=DEV, smoke_test_event={"dryRun": True})
    OpsFunction(stack, "Unchecked", entry=entry, profile=DEV)
    OpsFunction(stack, "Zchecked", entry=entry, profile=DEV, smoke_test_event={"dryRun": True})
    nested = cdk.Stack(stage, "Other", stack_name="opskit-qa-other")
    OpsFunction(nested, "AlsoChecked", entry=entry, profile=DEV, smoke_test_event={"ping": 1})

    [step] = verification_steps(stage, environment="qa")

    assert sorted(step.env_from_cfn_outputs) == ["TARGETS_0", "TARGETS_1"], "one per stack"
    assert len(step.commands) == 3
    assert "opskit-qa-other/AlsoChecked" in step.commands[0]
    assert "\"$TARGETS_0\" | awk '{print $1}')" in step.commands[0]
    assert "--payload '{\"ping\": 1}'" in step.commands[0]
    assert "opskit-qa/Checked" in step.commands[1]
    assert "\"$TARGETS_1\" | awk '{print $1}')" in step.commands[1]
    assert f':{PIPELINE_ACCOUNT}:function:$function:DEV"' in step.commands[1]
    assert "\"$TARGETS_1\" | awk '{print $2}')" in step.commands[2]


def test_the_longest_values_are_counted_from_lambdas_and_codepipelines_maxima():
    """A name of 64 characters (Lambda's longest), a namespace of 100 (CodePipeline's)."""
    assert [listed_length(count) for count in (1, 2, 14)] == [64, 129, 909]
    assert reference_length("VerificationTargets") == len(
        "#{" + "n" * 100 + ".VerificationTargets}"
    )
    assert configuration_length({"TARGETS_0": 909}) == 961
    assert FUNCTIONS_PER_OUTPUT == 14, "15 names would make 1,026 characters"


def test_a_stage_of_many_functions_gets_as_many_outputs_and_builds_as_the_limit_needs():
    """With every name at Lambda's 64 characters, no output and no build's configuration
    passes CodePipeline's 1,000; every function is still invoked, once."""
    app = make_app()
    stage = cdk.Stage(app, "qa", env=cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION))
    entry = FUNCTIONS_DIR / "smoke_test"
    stacks = {
        cdk.Stack(stage, "Stack", stack_name="opskit-qa"): 16,
        cdk.Stack(stage, "Other", stack_name="opskit-qa-other"): 2,
    }
    for stack, count in stacks.items():
        for index in range(count):
            OpsFunction(stack, f"Check{index:02}", entry=entry, profile=DEV, smoke_test_event={})

    steps = verification_steps(stage, environment="qa")

    outputs = {
        (stack.stack_name, output_id): len(listed_names(output))
        for stack in stacks
        for output_id, output in Template.from_stack(stack).find_outputs("*").items()
    }
    assert outputs == {
        ("opskit-qa", "VerificationTargets"): 14,
        ("opskit-qa", "VerificationTargets2"): 2,
        ("opskit-qa-other", "VerificationTargets"): 2,
    }
    listed: dict[tuple[str, str], int] = {}
    for (stack_name, output_id), count in outputs.items():
        [stack] = [stack for stack in stacks if stack.stack_name == stack_name]
        output = stack.node.find_child(output_id)
        assert isinstance(output, cdk.CfnOutput)
        reference = pipelines.StackOutputReference.from_cfn_output(output)
        listed[(reference.stack_description, reference.output_name)] = count
    assert [step.id for step in steps] == ["Verify", "Verify2"]
    for step in steps:
        longest = [
            {
                "name": variable,
                "type": "PLAINTEXT",
                "value": " ".join(
                    ["f" * 64] * listed[(output.stack_description, output.output_name)]
                ),
            }
            for variable, output in step.env_from_cfn_outputs.items()
        ]
        assert len(json.dumps(longest, separators=(",", ":"))) <= 1000, step.id
    invoked = [re.findall(r'echo "([^"]+): invoking', c)[0] for s in steps for c in s.commands]
    assert sorted(invoked) == sorted(
        f"{stack.stack_name}/Check{index:02}"
        for stack, count in stacks.items()
        for index in range(count)
    )


def test_a_stage_of_many_stacks_splits_its_verification_by_the_references_the_template_holds():
    """A one-name output resolves short, but the template holds `#{namespace.Output}`,
    whose namespace CDK Pipelines derives from a stack's id; that too must fit."""
    app = make_app()
    env = cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION)
    host = cdk.Stack(app, "Host", env=env)
    source = pipelines.CodePipelineSource.connection(
        "example-org/repo", "main", connection_arn=project_settings()["pipeline"]["connectionArn"]
    )
    pipeline = pipelines.CodePipeline(
        host, "Pipeline", synth=pipelines.ShellStep("Synth", input=source, commands=["true"])
    )
    stage = cdk.Stage(app, "qa", env=env)
    for index in range(8):
        stack = cdk.Stack(stage, f"OpsKit-staging-notification-capability{index}")
        OpsFunction(
            stack, "Check", entry=FUNCTIONS_DIR / "smoke_test", profile=DEV, smoke_test_event={}
        )
    pipeline.add_stage(stage, post=verification_steps(stage, environment="qa"))
    pipeline.build_pipeline()

    [pipeline_resource] = (
        Template.from_stack(host).find_resources("AWS::CodePipeline::Pipeline").values()
    )
    [qa] = [s for s in pipeline_resource["Properties"]["Stages"] if s["Name"] == "qa"]
    verifications = [a for a in qa["Actions"] if a["Name"].startswith("Verify")]
    assert len(verifications) > 1
    variables = [
        variable
        for action in verifications
        for variable in json.loads(action["Configuration"]["EnvironmentVariables"])
    ]
    assert len(variables) == 8, "each stack's output is read once"
    assert max(len(a["Configuration"]["EnvironmentVariables"]) for a in verifications) <= 1000


def test_each_alias_is_invoked_by_its_arn_in_the_stages_partition():
    app = make_app()
    stage = cdk.Stage(app, "qa", env=cdk.Environment(account=PIPELINE_ACCOUNT, region="cn-north-1"))
    stack = cdk.Stack(stage, "Stack", stack_name="opskit-qa")
    OpsFunction(
        stack, "Check", entry=FUNCTIONS_DIR / "smoke_test", profile=DEV, smoke_test_event={}
    )

    [step] = verification_steps(stage, environment="qa")

    [command] = step.commands
    alias_arn = f"arn:aws-cn:lambda:cn-north-1:{PIPELINE_ACCOUNT}:function:$function:DEV"
    assert f'--region cn-north-1 --function-name "{alias_arn}"' in command


def test_each_verification_waits_as_long_as_its_function_may_run():
    """The CLI's default 60 s read timeout would give up on a longer run and invoke again."""
    app = make_app()
    stage = cdk.Stage(app, "qa", env=cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION))
    stack = cdk.Stack(stage, "Stack", stack_name="opskit-qa")
    entry = FUNCTIONS_DIR / "smoke_test"
    for name, seconds in (("Quick", 30), ("Long", 840)):
        OpsFunction(
            stack,
            name,
            entry=entry,
            profile=DEV,
            smoke_test_event={},
            timeout=cdk.Duration.seconds(seconds),
        )

    [step] = verification_steps(stage, environment="qa")
    commands = step.commands

    read_timeouts = [int(c.split("--cli-read-timeout ", 1)[1].split()[0]) for c in commands]
    assert sorted(read_timeouts) == [60, 870], "each function's timeout, plus 30 s"
    assert all("--cli-connect-timeout 10 " in c for c in commands)


def test_the_targets_output_is_described_within_cloudformations_1024_characters():
    app = make_app()
    stage = cdk.Stage(app, "qa", env=cdk.Environment(account=PIPELINE_ACCOUNT, region=REGION))
    stack = cdk.Stack(stage, "Stack", stack_name="opskit-qa")
    entry = FUNCTIONS_DIR / "smoke_test"
    deep = Construct(stack, "Capability" * 12)
    for index in range(8):
        OpsFunction(deep, f"Check{index}", entry=entry, profile=DEV, smoke_test_event={})

    verification_steps(stage, environment="qa")

    output = only(Template.from_stack(stack).find_outputs("VerificationTargets"))
    assert len(output["Description"]) == 1024
    assert output["Description"].startswith("Functions to invoke")


def test_verifying_a_stage_without_smoke_tested_functions_is_a_config_error():
    app = make_app()
    stage = cdk.Stage(app, "qa")
    OpsFunction(
        cdk.Stack(stage, "Stack"), "Unchecked", entry=FUNCTIONS_DIR / "notification", profile=DEV
    )
    with pytest.raises(ConfigError, match="'verifyAfter' names 'qa', whose stacks have no"):
        verification_steps(stage, environment="qa")
