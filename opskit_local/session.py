"""One environment's functions on one emulator, shared by `make local`, `make invoke`, tests.

A session knows the functions of a template (`Catalog`), resolves each one's variables
against the emulator when it is first needed (`Resolver`), and runs it in this process
(`Sandbox`) with the emulator's endpoint, throwaway credentials and the Lambda/CodeDeploy
stand-in in its environment. It either starts the emulator and the stand-ins itself
(`Session.start`) or uses a running `make local`'s (`Session.attach`): a function that
invokes another (the smoke test) then has it run by `make local`, whose window shows
that function's log lines.

Functions the stack does not compose (an environment without `userService`) get the
stand-in definitions of `opskit_local.user_service.stand_in_template` (see `with_stand_ins`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from opskit_local.catalog import Catalog, LocalFunction
from opskit_local.emulator import DEFAULT_REGION, Emulator, client, environment
from opskit_local.errors import LocalError
from opskit_local.resources import Resolver, Where
from opskit_local.runner import Invocation, Sandbox
from opskit_local.stand_ins import Invoked, LambdaStandIn, WebhookStandIn
from opskit_local.state import Deployed, Running


def stack_name(environment_name: str) -> str:
    """The stack's name (opskit-<env>): what the emulator's resources are named after."""
    return f"opskit-{environment_name}"


def with_stand_ins(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template plus stand-in definitions of the functions it does not have by name."""
    from opskit_local.user_service import stand_in_template

    names = set(Catalog.of(template).by_name)
    extra = stand_in_template()
    missing = Catalog.of(extra).by_name.keys() - names
    if not missing:
        return dict(template)
    resources = dict(template.get("Resources") or {})
    for logical_id, resource in extra["Resources"].items():
        function = (resource.get("Metadata") or {}).get("opskit:function")
        if function is None or function in missing:
            resources[logical_id] = resource
    return {**template, "Resources": resources}


class Session:
    """Functions, the emulator they run against, and the stand-ins; close() when done."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        endpoint_url: str,
        region: str,
        resolver: Resolver | None,
        deployed: Mapping[str, Deployed],
        log: TextIO,
        closing: list[Callable[[], None]],
        lambda_url: str | None = None,
    ) -> None:
        """`lambda_url`: a running Lambda/CodeDeploy stand-in; None starts one here."""
        self.catalog = catalog
        self.endpoint_url = endpoint_url
        self.region = region
        self.resolver = resolver
        self.log = log
        self._deployed = dict(deployed)
        self._sandboxes: dict[str, Sandbox] = {}
        self._closing = closing
        self.webhook: WebhookStandIn | None = None
        self.lambda_stand_in: LambdaStandIn | None = None
        if lambda_url is None:
            self.lambda_stand_in = LambdaStandIn(self.invoke_by_name, report=self.report).start()
            self._closing.append(self.lambda_stand_in.stop)
            lambda_url = self.lambda_stand_in.base_url
        self.lambda_url = lambda_url

    @classmethod
    def start(
        cls,
        template: Mapping[str, Any],
        *,
        environment_name: str,
        log: TextIO = sys.stderr,
        port: int = 0,
        region: str = DEFAULT_REGION,
    ) -> Session:
        """Starts an emulator and a webhook stand-in of its own."""
        template = with_stand_ins(template)
        emulator = Emulator(port=port, region=region).start()
        closing: list[Callable[[], None]] = [emulator.stop]
        try:
            session = cls(
                catalog=Catalog.of(template),
                endpoint_url=emulator.endpoint_url,
                region=region,
                resolver=None,
                deployed={},
                log=log,
                closing=closing,
            )
            webhook = WebhookStandIn(report=session.report).start()
            closing.append(webhook.stop)
            session.webhook = webhook
            session.resolver = Resolver(
                template,
                clients=emulator.client,
                region=region,
                stack_name=stack_name(environment_name),
                webhook_url=webhook.url,
            )
        except BaseException:
            for stop in reversed(closing):
                stop()
            raise
        return session

    @classmethod
    def attach(
        cls,
        running: Running,
        *,
        template: Mapping[str, Any] | None = None,
        log: TextIO = sys.stderr,
    ) -> Session:
        """Uses a running `make local`: its resolved functions, or `template` resolved anew
        against its emulator (creating what is missing) when its template is out of date."""
        if template is None:
            catalog = Catalog(deployed.function for deployed in running.functions)
            deployed = {d.function.logical_id: d for d in running.functions}
            resolver = None
        else:
            template = with_stand_ins(template)
            catalog, deployed = Catalog.of(template), {}
            resolver = Resolver(
                template,
                clients=lambda service: client(
                    service, running.endpoint_url, region=running.region
                ),
                region=running.region,
                stack_name=stack_name(running.environment),
                webhook_url=running.webhook_url,
            )
        return cls(
            catalog=catalog,
            endpoint_url=running.endpoint_url,
            region=running.region,
            resolver=resolver,
            deployed=deployed,
            log=log,
            closing=[],
            lambda_url=running.lambda_url,
        )

    def report(self, line: str) -> None:
        print(f"opskit local: {line}", file=self.log, flush=True)

    def close(self) -> None:
        while self._closing:
            self._closing.pop()()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def function(self, name: str) -> LocalFunction:
        """The function named `name` (or with that logical id); a one-line error if none."""
        return self.catalog.get(name)

    def deployed(self, function: LocalFunction) -> Deployed:
        """The function with its variables resolved (creating their resources on first use)."""
        known = self._deployed.get(function.logical_id)
        if known is not None:
            return known
        if self.resolver is None:
            raise LocalError(f"function {function.name!r} is not in the running `make local`")
        function_name = self._name(function)
        try:
            environment = self.resolver.environment(function)
            deployed = Deployed(function, function_name, environment)
        except LocalError as error:
            deployed = Deployed(function, function_name, None, str(error))
        self._deployed[function.logical_id] = deployed
        return deployed

    def deploy_all(self) -> list[Deployed]:
        """Every function resolved: what `make local` writes down for `make invoke`."""
        return [self.deployed(f) for f in self.catalog.by_logical_id.values()]

    def invoke(self, name: str, event: Any) -> Invocation:
        """Runs the function named `name` with `event` in this process."""
        return self._sandbox(self.deployed(self.function(name))).invoke(event)

    def invoke_by_name(self, name: str, qualifier: str | None, payload: bytes) -> Invoked:
        """The Lambda stand-in's Invoke: `name` is a function name or ARN, as Lambda takes it.

        LookupError: no such function; ValueError: the payload is not JSON.
        """
        function_name = name.split(":")[6] if name.startswith("arn:") else name.split(":")[0]
        found = next(
            (f for f in self.catalog.by_logical_id.values() if self._name(f) == function_name),
            None,
        )
        if found is None:
            raise LookupError(f"Function not found: {self.function_arn(function_name)}")
        if not payload:
            return Invoked(b"", None)
        event = json.loads(payload)
        try:
            invocation = self._sandbox(self.deployed(found)).invoke(event)
        except LocalError as error:
            failure = {"errorMessage": str(error), "errorType": "LocalError"}
            return Invoked(json.dumps(failure).encode(), "Unhandled")
        return Invoked(invocation.payload, invocation.error)

    def _name(self, function: LocalFunction) -> str:
        """The function's physical name, without resolving its variables."""
        known = self._deployed.get(function.logical_id)
        if known is not None:
            return known.function_name
        if self.resolver is None:
            return ""
        return self.resolver.make(function.logical_id, Where(function.name, "itself"))["Ref"]

    def function_arn(self, function_name: str) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{function_name}"

    def _sandbox(self, deployed: Deployed) -> Sandbox:
        function = deployed.function
        if deployed.environment is None:
            raise LocalError(deployed.problem or f"{function.name}: cannot be run locally")
        sandbox = self._sandboxes.get(function.logical_id)
        if sandbox is None:
            variables: dict[str, str | None] = {
                **environment(self.endpoint_url, region=self.region),
                "AWS_ENDPOINT_URL_LAMBDA": self.lambda_url,
                "AWS_ENDPOINT_URL_CODEDEPLOY": self.lambda_url,
                "AWS_PROFILE": None,
                **deployed.environment,
            }
            sandbox = Sandbox(
                function,
                variables,
                function_name=deployed.function_name,
                function_arn=self.function_arn(deployed.function_name),
                log=self.log,
            )
            self._sandboxes[function.logical_id] = sandbox
        return sandbox

    def resources(self) -> list[tuple[str, str, str]]:
        """(logical id, type, Ref) of what the resolver created on the emulator."""
        if self.resolver is None:
            return []
        resolver = self.resolver
        made = [
            (logical_id, resolver.resources[logical_id]["Type"], attributes["Ref"])
            for logical_id, attributes in resolver.made.items()
            if not resolver.resources[logical_id]["Type"].startswith(
                ("AWS::Lambda::", "AWS::IAM::")
            )
        ]
        imported = [
            (f"{name} (by name)", "AWS::SecretsManager::Secret", arn)
            for name, arn in resolver.imported_secrets.items()
        ]
        return made + imported

    def running(self, *, pid: int, environment_name: str, source: str) -> Running:
        """What `make invoke` needs to use this session's emulator: every function resolved."""
        if self.webhook is None:
            raise LocalError("only a session that started its emulator can be shared")
        return Running(
            pid=pid,
            environment=environment_name,
            source=source,
            region=self.region,
            endpoint_url=self.endpoint_url,
            webhook_url=self.webhook.url,
            lambda_url=self.lambda_url,
            functions=self.deploy_all(),
        )
