"""The README's Python examples, run the way a reader assembles them: the first is a whole
app (`app`, `stack`, `monitoring`), and every later one adds to it before its closing
`app.synth()`. Like a consumer's app, it has none of this repo's feature flags. Bundling and
CDK's built-in validation are skipped here: test_packaging.py bundles the same app from the
installed wheel in a fresh virtualenv, and `make package-check` (CI) validates it too."""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from scripts.package_check import README, SYNTH, python_blocks, write_reader_files
from tests.synth import resources_of_type


@dataclass
class Run:
    blocks: list[str]
    failures: list[str]
    namespace: dict[str, Any]
    assembly: cdk.cx_api.CloudAssembly | None


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("reader")
    write_reader_files(workdir)
    app = functools.partial(
        cdk.App,
        context={"aws:cdk:bundling-stacks": []},
        outdir=tempfile.mkdtemp(prefix="opskit-readme-"),
        builtin_cloud_formation_validation=False,
    )
    blocks = python_blocks(README.read_text())
    whole_app, *additions = blocks
    assert whole_app.endswith(SYNTH), "the first example is a whole app"
    namespace: dict[str, Any] = {}
    failures = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setattr(cdk, "App", app)
        for block in [whole_app.removesuffix(SYNTH), *additions, SYNTH]:
            try:
                exec(compile(block, str(README), "exec"), namespace)
            except Exception as error:
                failures.append(f"{block.splitlines()[0]!r}...: {type(error).__name__}: {error}")
    assembly = namespace["app"].synth() if not failures else None
    return Run(blocks, failures, namespace, assembly)


def test_every_python_block_of_the_readme_is_found():
    text = README.read_text()
    assert len(python_blocks(text)) == text.count("```python") >= 7


def test_every_example_runs_after_the_ones_before_it(readme_run):
    assert readme_run.failures == []


def test_the_examples_synthesize_one_stack_with_what_each_added(readme_run):
    assert readme_run.assembly is not None
    assert [stack.stack_name for stack in readme_run.assembly.stacks] == ["Operations"]
    template = Template.from_stack(readme_run.namespace["stack"])
    for type_ in ("AWS::Budgets::Budget", "AWS::Cognito::UserPool", "AWS::Events::Rule"):
        assert resources_of_type(template, type_), type_
    watched = [
        subscription["Properties"]["LogGroupName"]
        for subscription in resources_of_type(template, "AWS::Logs::SubscriptionFilter").values()
    ]
    assert {"/aws/lambda/legacy-orders", "/aws/lambda/legacy-api"} <= {
        name for name in watched if isinstance(name, str)
    }
    expressions = [
        schedule["Properties"]["ScheduleExpression"]
        for schedule in resources_of_type(template, "AWS::Scheduler::Schedule").values()
    ]
    assert "cron(0 20 ? * MON-FRI *)" in expressions, "the scheduler's scale-down time"


def test_its_api_redeploys_on_a_new_authorizer_though_the_app_lacks_cdks_flags(readme_run):
    """The README's app has none of this repo's feature flags, like apps made before CDK
    2.66: without `authorizerChangeDeploymentLogicalId` a changed authorizer would make no
    new deployment, and the stage would keep trusting the old user pool; without
    `logGroupDestinationArnWithoutWildcard` the access log destination always drifts."""
    template = Template.from_stack(readme_run.namespace["stack"])
    [deployment] = template.find_resources("AWS::ApiGateway::Deployment").values()
    [authorizer] = template.find_resources("AWS::ApiGateway::Authorizer")
    assert authorizer in deployment["DependsOn"]
    [stage] = template.find_resources("AWS::ApiGateway::Stage").values()
    assert ":*" not in json.dumps(stage["Properties"]["AccessLogSetting"]["DestinationArn"])
