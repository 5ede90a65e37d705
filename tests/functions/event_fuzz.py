"""Mutation fuzzing of every handler with its sample events (`events/<function>/*.json`).

Each sample yields variants, deterministically and in a fixed order: for every path in
it (object keys and list items, recursively, and into the JSON a handler decodes from a
string field: SQS and SNS bodies, the API's body, the logs payload's gzip) the value is
deleted, made null, or replaced by one of ``REPLACEMENTS`` of another type; and the
whole event is replaced by null, [], "", 42 and {}. Each variant runs through the
handler in this process, against moto, and its outcome is one of:

- ``ok``: it returned (an API response below 400);
- ``typed``: it raised the error its handler documents for bad input (a malformed event,
  a refused environment, a batch whose every record failed);
- ``4xx``: the API answered a client error with a JSON body;
- ``batch``: an SQS batch reported item failures;
- ``crash``: anything else (a KeyError, a TypeError, an API 5xx).

A typed error that names neither part of the mutated path nor a field is ``vague``: it
does not help either.

    .venv/bin/python -m tests.functions.event_fuzz [FUNCTION ...] [--show crash,vague,...]

runs every variant of every function (or of those named), about 25 s, and prints the
counts, then each crash with its line and each vague error; it exits 1 if there were any.
``tests/functions/test_event_fuzz.py`` runs a fixed sample of the variants in the suite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import gzip
import io
import json
import os
import re
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
FUNCTIONS = REPO / "opskit" / "functions"
REGION = "eu-west-1"

# --- variants ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """A document carried inside a string field, as the handler decodes it."""

    name: str
    decode: Callable[[str], Any]
    encode: Callable[[Any], str]
    called: tuple[str, ...]
    """What the handlers' messages call the decoded document."""


def _gzip_json_decode(text: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(text)))


def _gzip_json_encode(document: Any) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()


JSON = Codec("json", json.loads, json.dumps, ("body", "message"))
AWSLOGS = Codec("gzip", _gzip_json_decode, _gzip_json_encode, ("payload",))

Key = str | int | Codec
Path_ = tuple[Key, ...]


class _Delete:
    def __repr__(self) -> str:
        return "delete"


DELETE: Any = _Delete()
REPLACEMENTS: tuple[Any, ...] = (
    True,
    0,
    42,
    1.5,
    "",
    "fuzz",
    [],
    ["fuzz"],
    {},
    {"fuzz": "fuzz"},
)
"""Falsy and truthy values of each JSON type; a value replaces only one of another type
(bool, int and float count as different types)."""
WHOLE_EVENTS: tuple[Any, ...] = (None, [], "", 42, {})


@dataclass(frozen=True)
class Variant:
    function: str
    sample: str
    path: Path_
    mutation: Any
    event: Any = field(repr=False, compare=False, hash=False)

    @property
    def where(self) -> str:
        return render_path(self.path)

    @property
    def what(self) -> str:
        if self.mutation is DELETE:
            return "delete"
        return f"-> {json.dumps(self.mutation)}"

    @property
    def id(self) -> str:
        return f"{self.sample}:{self.where}:{self.what}"


def render_path(path: Path_) -> str:
    if not path:
        return "<event>"
    text = ""
    for key in path:
        if isinstance(key, Codec):
            text += f"<{key.name}>"
        elif isinstance(key, int):
            text += f"[{key}]"
        else:
            text += f".{key}" if text else key
    return text


def _matches(path: Path_, pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(
        (isinstance(key, int) and want == "*") or key == want
        for key, want in zip(path, pattern, strict=True)
    )


def paths(
    value: Any, nested: Mapping[tuple[str, ...], Codec], prefix: Path_ = ()
) -> Iterator[Path_]:
    """Every path under ``value``, parents before children, in document order."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, nested, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from paths(item, nested, (*prefix, index))
    elif isinstance(value, str):
        codec = next((c for p, c in nested.items() if _matches(prefix, p)), None)
        if codec is not None:
            try:
                inner = codec.decode(value)
            except ValueError:
                return
            yield (*prefix, codec)
            yield from paths(inner, {}, (*prefix, codec))


def mutate(document: Any, path: Path_, mutation: Any) -> Any:
    """A copy of ``document`` with the value at ``path`` deleted or replaced."""
    if not path:
        return copy.deepcopy(mutation)
    head, rest = path[0], path[1:]
    if isinstance(head, Codec):
        return head.encode(mutate(head.decode(document), rest, mutation))
    changed = copy.copy(document)
    if not rest and mutation is DELETE:
        del changed[head]
    else:
        changed[head] = mutate(document[head], rest, mutation)
    return changed


def value_at(document: Any, path: Path_) -> Any:
    for key in path:
        document = key.decode(document) if isinstance(key, Codec) else document[key]
    return document


def same_type(a: Any, b: Any) -> bool:
    return type(a) is type(b)


def variants_of(
    function: str, sample: str, event: Any, nested: Mapping[tuple[str, ...], Codec]
) -> Iterator[Variant]:
    """Every path of one sample event, each deleted, made null and replaced."""
    for path in paths(event, nested):
        original = value_at(event, path)
        mutations: list[Any] = [] if isinstance(path[-1], Codec) else [DELETE]
        if original is not None:
            mutations.append(None)
        mutations += [r for r in REPLACEMENTS if not same_type(r, original)]
        for mutation in mutations:
            yield Variant(function, sample, path, mutation, mutate(event, path, mutation))


def sample(variants: list[Variant], size: int) -> list[Variant]:
    """At most ``size`` variants, the same ones on every run: the whole-event ones, then
    every path once (its mutation taken in turn from the path's list, so that deletions,
    nulls and each replacement all come up), evenly thinned to fit."""
    wholes = [variant for variant in variants if not variant.path]
    by_path: dict[tuple[str, Path_], list[Variant]] = {}
    for variant in variants:
        if variant.path:
            by_path.setdefault((variant.sample, variant.path), []).append(variant)
    picked = [group[i % len(group)] for i, group in enumerate(by_path.values())]
    room = max(0, size - len(wholes))
    if len(picked) > room:
        picked = [picked[i * len(picked) // room] for i in range(room)]
    return (wholes + picked)[:size]


# --- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One function: where its handler is, what it may raise for bad input, and what it parses."""

    name: str
    typed_errors: tuple[str, ...] = ("MalformedEventError",)
    """Names of the exception classes (or of their bases) that count as typed."""
    nested: Mapping[tuple[str, ...], Codec] = field(default_factory=dict)
    api: bool = False

    @property
    def folder(self) -> str:
        return self.name.partition(".")[0]

    @property
    def module(self) -> str:
        return self.name.partition(".")[2] or "app"

    def samples(self) -> list[tuple[str, Any]]:
        return [
            (path.stem, json.loads(path.read_text()))
            for path in sorted((EVENTS / self.name).glob("*.json"))
        ]

    def variants(self) -> list[Variant]:
        """The whole-event variants, then each sample's."""
        wholes = [Variant(self.name, "*", (), w, copy.deepcopy(w)) for w in WHOLE_EVENTS]
        return wholes + [
            variant
            for sample, event in self.samples()
            for variant in variants_of(self.name, sample, event, self.nested)
        ]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("backup", ("MalformedEventError", "RefusedEnvironmentError")),
        Target("env_scheduler", ("MalformedEventError", "RefusedEnvironmentError")),
        Target("log_processor", ("MalformedPayloadError",), {("awslogs", "data"): AWSLOGS}),
        Target("notification"),
        Target("smoke_test", ("MalformedHookEventError",)),
        Target("snapshot_cleanup"),
        Target("user_service.api", (), {("body",): JSON}, api=True),
        Target(
            "user_service.email_sender",
            ("MalformedEventError", "BatchFailedError"),
            {("Records", "*", "body"): JSON},
        ),
        Target("user_service.user_created", nested={("Records", "*", "Sns", "Message"): JSON}),
        Target("user_service.user_metrics"),
    )
}


# --- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str
    """ok, typed, 4xx, batch or crash."""
    detail: str = ""
    line: str = ""
    """For a crash: the innermost line of the function's or the layer's code."""
    vague: bool = False
    seconds: float = 0.0


def _words(variant: Variant) -> list[str]:
    words = []
    for key in variant.path:
        if isinstance(key, str):
            words.append(key.lower())
        elif isinstance(key, int):
            words += [f"[{key}]", f"record {key}"]
        else:
            words += key.called
    return words or ["event"]


_FIELD = re.compile(r"field '[^']+'")


def names_the_problem(variant: Variant, message: str) -> bool:
    """Whether a message says what to fix: it names part of the mutated path (the event
    itself for a whole-event variant), or the field the handler needed (a deleted
    discriminator, such as `detail-type`, makes the event another kind, missing others)."""
    text = message.lower()
    return any(word in text for word in _words(variant)) or bool(_FIELD.search(message))


def _innermost_own_line(error: BaseException) -> str:
    own = (str(FUNCTIONS), str(REPO / "opskit" / "layers"))
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(own)]
    if not frames:
        return ""
    last = frames[-1]
    return f"{Path(last.filename).relative_to(REPO)}:{last.lineno}: {last.line}"


def _is_typed(error: BaseException, target: Target) -> bool:
    return any(c.__name__ in target.typed_errors for c in type(error).__mro__)


def classify(target: Target, variant: Variant, run: Handler) -> Outcome:
    """Runs one variant and says what came of it."""
    logged: list[BaseException] = []
    started = time.perf_counter()
    try:
        result = run(variant.event) if not target.api else _run_api(run, variant.event, logged)
    except Exception as error:
        seconds = time.perf_counter() - started
        message = f"{type(error).__name__}: {error}"
        if _is_typed(error, target):
            vague = not names_the_problem(variant, str(error))
            return Outcome("typed", message, vague=vague, seconds=seconds)
        return Outcome("crash", message, _innermost_own_line(error), seconds=seconds)
    seconds = time.perf_counter() - started
    if target.api:
        return _api_outcome(variant, result, logged, seconds)
    if isinstance(result, Mapping) and result.get("batchItemFailures"):
        return Outcome("batch", json.dumps(result)[:200], seconds=seconds)
    return Outcome("ok", seconds=seconds)


def _run_api(run: Handler, event: Any, logged: list[BaseException]) -> Any:
    """The API handler catches everything; what it logs as unhandled is the crash."""
    module = run.module
    original = module.logger.exception

    def record(*args: Any, **kwargs: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            logged.append(error)

    module.logger.exception = record
    try:
        return run(event)
    finally:
        module.logger.exception = original


def _api_outcome(
    variant: Variant, result: Any, logged: list[BaseException], seconds: float
) -> Outcome:
    status = result.get("statusCode") if isinstance(result, Mapping) else None
    if not isinstance(status, int):
        return Outcome("crash", f"not an API Gateway response: {result!r:.100}", seconds=seconds)
    if status < 400:
        return Outcome("ok", str(status), seconds=seconds)
    body = result.get("body") or ""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status < 500 and isinstance(document, dict) and "error" in document:
        text = json.dumps({k: document[k] for k in ("error", "details") if k in document})
        return Outcome("4xx", f"{status} {text}"[:300], seconds=seconds)
    if logged:
        error = logged[0]
        return Outcome(
            "crash",
            f"{status} from {type(error).__name__}: {error}",
            _innermost_own_line(error),
            seconds=seconds,
        )
    return Outcome("crash", f"{status} {body[:200]}", seconds=seconds)


# --- the rig: resources on moto, each function's environment ------------------------------


class FakeLambda:
    """The smoke test's target: a healthy function that answers 200."""

    meta = SimpleNamespace(config=SimpleNamespace(read_timeout=60.0))

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "StatusCode": 200,
            "ExecutedVersion": "1",
            "Payload": io.BytesIO(b'{"statusCode": 200}'),
        }


class FakeCodeDeploy:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def put_lifecycle_event_hook_execution_status(self, **kwargs: Any) -> dict[str, Any]:
        self.reports.append(kwargs)
        return {"lifecycleEventHookExecutionId": kwargs["lifecycleEventHookExecutionId"]}


@dataclass(frozen=True)
class Handler:
    """A function's handler module, called with an event and a test context."""

    module: Any
    context: Any
    after: Callable[[Any], None] | None = None
    """Called with each result."""

    def __call__(self, event: Any) -> Any:
        result = self.module.lambda_handler(event, self.context)
        if self.after is not None:
            self.after(result)
        return result


class Environment(Protocol):
    """What the rig changes for a function: pytest's monkeypatch has these."""

    def setenv(self, name: str, value: str) -> None: ...

    def delenv(self, name: str, raising: bool = ...) -> None: ...

    def syspath_prepend(self, path: str) -> None: ...


@dataclass
class Rig:
    """The resources every function needs, made once on moto; one function set up at a time."""

    endpoint: str
    webhook_url: str
    prefix: str = field(default_factory=lambda: f"fuzz{uuid.uuid4().hex[:8]}")
    _made: dict[str, Any] = field(default_factory=dict)

    def aws(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def _once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    def topic(self) -> str:
        return str(
            self._once(
                "topic",
                lambda: self.aws("sns").create_topic(Name=f"{self.prefix}-reports")["TopicArn"],
            )
        )

    def user_service(self) -> Any:
        def make() -> Any:
            from opskit_local.emulator import apply_fidelity_fixes
            from opskit_local.user_service import create_resources

            apply_fidelity_fixes()
            return create_resources(
                self.aws, prefix=self.prefix, allowed_origins=["http://localhost:3000"]
            )

        return self._once("user_service", make)

    def _environment(self, target: Target) -> dict[str, str | None]:
        name = target.name
        if name == "backup":
            return {"ENVIRONMENT": "dev", "SNS_TOPIC_ARN": self.topic()}
        if name == "env_scheduler":
            return {"ALLOWED_ENVIRONMENTS": "dev", "SNS_TOPIC_ARN": self.topic()}
        if name == "log_processor":
            return {
                "ALERT_TOPIC_ARN": self.topic(),
                "ENVIRONMENT_NAME": "dev",
                "RATE_LIMIT_TABLE": None,
                "ERROR_PATTERNS": None,
                "CRITICAL_PATTERNS": None,
            }
        if name == "notification":
            secret = self._once(
                "webhook_secret",
                lambda: self.aws("secretsmanager").create_secret(
                    Name=f"{self.prefix}/webhook", SecretString=self.webhook_url
                )["ARN"],
            )
            return {"WEBHOOK_SECRET_ARN": secret, "WEBHOOK_FORMAT": None}
        if name == "smoke_test":
            return {"TARGET_FUNCTION_NAME": "target", "TARGET_QUALIFIER": "DEV", "TEST_EVENT": None}
        if name == "snapshot_cleanup":
            return {
                "SNS_TOPIC_ARN": self.topic(),
                "ENVIRONMENT": "dev",
                "SCOPE": None,
                "RETENTION_DAYS": None,
                "MIN_KEEP_PER_VOLUME": None,
            }
        if name == "user_service.api":
            return dict(self.user_service().environment())
        if name == "user_service.email_sender":

            def identity() -> str:
                address = f"{self.prefix}@example.com"
                self.aws("sesv2").create_email_identity(EmailIdentity=address)
                return address

            return {"FROM_EMAIL": self._once("sender", identity), "CONFIGURATION_SET": None}
        if name == "user_service.user_created":
            return {"AUDIT_TABLE": self._audit_table(), "EMAIL_QUEUE": self._email_queue()}
        if name == "user_service.user_metrics":
            return {
                "USERS_TABLE": self.user_service().table_name,
                "METRICS_NAMESPACE": "opskit-fuzz",
                "USER_COUNT_SOURCE": None,
            }
        raise KeyError(name)

    def _audit_table(self) -> str:
        def make() -> str:
            table = f"{self.prefix}-audit"
            self.aws("dynamodb").create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "audit_id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "audit_id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            return table

        return str(self._once("audit", make))

    def _email_queue(self) -> str:
        return str(
            self._once(
                "email_queue",
                lambda: self.aws("sqs").create_queue(QueueName=f"{self.prefix}-email")["QueueUrl"],
            )
        )

    def handler(self, target: Target, environment: Environment) -> Handler:
        """The function's handler, freshly imported, with its environment set; one argument:
        the event (the context is a test one)."""
        from opskit_local.functions import COMMON_LAYER_DIR, load_function

        for name, value in self._environment(target).items():
            if value is None:
                environment.delenv(name, raising=False)
            else:
                environment.setenv(name, value)
        environment.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        for folder in (COMMON_LAYER_DIR, FUNCTIONS / target.folder):
            if str(folder) not in sys.path:
                environment.syspath_prepend(str(folder))
        if target.folder == "log_processor":
            for loaded in [n for n in sys.modules if n.split(".")[0] == "log_processing"]:
                del sys.modules[loaded]
        module: Any = load_function(target.folder, target.module)
        self._quieten(target, module)
        from tests.functions.conftest import LambdaContext

        return Handler(module, LambdaContext(), self._forget_created if target.api else None)

    def _quieten(self, target: Target, module: Any) -> None:
        """No waits, no output on stdout, stand-ins where moto has nothing."""
        if target.name == "notification":
            module.retry_sleep = lambda seconds: None
        elif target.name == "log_processor":
            module.emit = lambda line: None
        elif target.name == "snapshot_cleanup":
            from tests.functions.snapshot_locks import answer_locked_snapshots

            answer_locked_snapshots(module.ec2_client(), {}, "123456789012")
        elif target.name == "smoke_test":
            module._lambda_client = FakeLambda()
            module._codedeploy_client = FakeCodeDeploy()
            module.throttle_sleep = lambda seconds: None

    def _forget_created(self, result: Any) -> None:
        """A created user is deleted again, so the next variant's create is not a 409."""
        if not isinstance(result, Mapping) or result.get("statusCode") != 201:
            return
        user_id = json.loads(result["body"])["user"]["user_id"]
        from opskit_local.functions import load_function

        users: Any = self._once("users", lambda: load_function("user_service", "users"))
        users.UserStore(
            table_name=self.user_service().table_name, dynamodb=self.aws("dynamodb")
        ).delete(user_id)


@dataclass
class Report:
    target: Target
    results: list[tuple[Variant, Outcome]]

    def counts(self) -> Counter[str]:
        return Counter(o.kind + (" (vague)" if o.vague else "") for _, o in self.results)

    def crashes(self) -> list[tuple[Variant, Outcome]]:
        return [(v, o) for v, o in self.results if o.kind == "crash"]

    def vague(self) -> list[tuple[Variant, Outcome]]:
        return [(v, o) for v, o in self.results if o.vague]


def fuzz(target: Target, run: Handler, variants: list[Variant]) -> Report:
    return Report(target, [(v, classify(target, v, run)) for v in variants])


# --- the command ---------------------------------------------------------------------------


class _ProcessEnvironment:
    """The command's changes stay: one function after the other sets what it needs."""

    def setenv(self, name: str, value: str) -> None:
        os.environ[name] = value

    def delenv(self, name: str, raising: bool = True) -> None:
        os.environ.pop(name, None)

    def syspath_prepend(self, path: str) -> None:
        sys.path.insert(0, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.functions.event_fuzz")
    parser.add_argument("functions", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument(
        "--show", default="crash,vague", help="outcomes to list: crash,vague,typed,..."
    )
    args = parser.parse_args(argv)
    show = set(args.show.split(","))

    from opskit_local.emulator import Emulator
    from opskit_local.functions import COMMON_LAYER_DIR

    sys.path.insert(0, str(COMMON_LAYER_DIR))
    from opskit_common import clients, secrets

    from tests.functions.stand_ins import WebhookServer

    server = Emulator().start()
    webhook = WebhookServer().start()
    endpoint = server.endpoint_url
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    }.items():
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)

    rig = Rig(endpoint, webhook.url)
    failed = 0
    try:
        for name in args.functions or list(TARGETS):
            target = TARGETS[name]
            clients.reset_clients()
            secrets.clear_cache()
            run = rig.handler(target, _ProcessEnvironment())
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # metrics (EMF) lines
                report = fuzz(target, run, target.variants())
            elapsed = time.perf_counter() - started
            counts = ", ".join(f"{k} {n}" for k, n in sorted(report.counts().items()))
            print(f"{name}: {len(report.results)} variants in {elapsed:.1f} s: {counts}")
            for variant, outcome in report.results:
                kind = "vague" if outcome.vague and "vague" in show else outcome.kind
                if kind in show:
                    print(f"  {kind.upper()} {variant.id}\n      {outcome.detail[:300]}")
                    if outcome.line:
                        print(f"      at {outcome.line}")
            failed += len(report.crashes()) + len(report.vague())
    finally:
        webhook.stop()
        server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
