"""Specification of the log processor (opskit/functions/log_processor/app.py).

Payloads are built the way CloudWatch Logs builds them: JSON, gzip, base64. SNS and
DynamoDB are moto's ThreadedMotoServer reached through AWS_ENDPOINT_URL; alerts are read
back from an SQS queue subscribed to the alert topic. Metrics are the Embedded Metric
Format lines the handler writes (captured through its `emit` hook, and once from stdout).
Time is a settable clock, so rate-limit windows pass without sleeping.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import itertools
import json
import random
import re
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from opskit_common.config import ConfigurationError

from tests.functions.conftest import FUNCTIONS, REGION, LambdaContext, load_handler

ACCOUNT = "123456789012"
LOG_GROUP = "/aws/lambda/orders"
LOG_STREAM = "2026/11/25/[$LATEST]0123456789abcdef"
START = datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC).timestamp()
WINDOW = 900


# --- payloads ----------------------------------------------------------------------------


def encode(document: Any) -> str:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw)).decode()


def subscription_event(
    lines: list[str],
    *,
    log_group: str = LOG_GROUP,
    log_stream: str = LOG_STREAM,
    first_ms: int = int(START * 1000),
) -> dict[str, Any]:
    """A DATA_MESSAGE shaped as CloudWatch Logs sends it (56-digit event ids included)."""
    return {
        "awslogs": {
            "data": encode(
                {
                    "messageType": "DATA_MESSAGE",
                    "owner": ACCOUNT,
                    "logGroup": log_group,
                    "logStream": log_stream,
                    "subscriptionFilters": ["opskit-test"],
                    "logEvents": [
                        {
                            "id": str(37263198473862918273648192837465019283746501928374650192 + i),
                            "timestamp": first_ms + i,
                            "message": line,
                        }
                        for i, line in enumerate(lines)
                    ],
                }
            )
        }
    }


CONTROL_EVENT = {
    "awslogs": {
        "data": encode(
            {
                "messageType": "CONTROL_MESSAGE",
                "owner": "CloudwatchLogs",
                "logGroup": "",
                "logStream": "",
                "subscriptionFilters": [],
                "logEvents": [
                    {
                        "id": "",
                        "timestamp": int(START * 1000),
                        "message": "CWL CONTROL MESSAGE: Checking health of destination Lambda.",
                    }
                ],
            }
        )
    }
}


# --- stand-ins -----------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Outputs:
    """What the handler emitted: EMF lines, parsed."""

    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@dataclass
class Aws:
    topic_arn: str
    queue_url: str
    table: str
    sqs: Any
    dynamodb: Any

    def alerts(self) -> list[dict[str, Any]]:
        """SNS notifications delivered to the subscribed queue since the last call."""
        received: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return received
            for message in batch:
                received.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


@pytest.fixture(scope="module")
def aws_resources(moto_endpoint: str) -> Aws:
    """One topic (with a queue reading it) and one table for the module; emptied per test."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sns = session.client("sns", endpoint_url=moto_endpoint)
    sqs = session.client("sqs", endpoint_url=moto_endpoint)
    dynamodb = session.client("dynamodb", endpoint_url=moto_endpoint)
    suffix = uuid.uuid4().hex[:10]
    topic_arn = sns.create_topic(Name=f"critical-{suffix}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"alerts-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    table = f"alert-windows-{suffix}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "logGroup", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "logGroup", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Aws(topic_arn, queue_url, table, sqs, dynamodb)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Sets the function's environment (the construct's defaults), then overrides on top
    of what is set. Offline by default; the `aws` fixture points it at moto."""
    state: dict[str, str | None] = {
        "ALERT_TOPIC_ARN": f"arn:aws:sns:{REGION}:{ACCOUNT}:offline",
        "RATE_LIMIT_TABLE": None,
        "ENVIRONMENT_NAME": "test",
        "ALERT_WINDOW_SECONDS": str(WINDOW),
        "METRIC_NAMESPACE": None,
        "ERROR_PATTERNS": None,
        "CRITICAL_PATTERNS": None,
        "MAX_DECOMPRESSED_BYTES": None,
        "POWERTOOLS_SERVICE_NAME": "log-processor-test",
    }

    def apply(**overrides: str | None) -> None:
        state.update(overrides)
        for name, value in state.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    apply()
    return apply


@pytest.fixture
def aws(aws_environment: str, aws_resources: Aws, configure: Callable[..., None]) -> Aws:
    """Moto's topic and table, emptied, with the function configured to use them."""
    aws_resources.alerts()
    for item in aws_resources.dynamodb.scan(TableName=aws_resources.table)["Items"]:
        aws_resources.dynamodb.delete_item(
            TableName=aws_resources.table, Key={"logGroup": item["logGroup"]}
        )
    configure(ALERT_TOPIC_ARN=aws_resources.topic_arn, RATE_LIMIT_TABLE=aws_resources.table)
    return aws_resources


@pytest.fixture
def sandbox(
    configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], ModuleType]]:
    """Starts a fresh sandbox: the handler and its package imported anew, so nothing in
    module memory survives from another sandbox; all sandboxes share one clock."""
    monkeypatch.syspath_prepend(str(FUNCTIONS / "log_processor"))
    clock = Clock()

    def start() -> ModuleType:
        for name in [n for n in sys.modules if n.split(".")[0] == "log_processing"]:
            del sys.modules[name]
        module: Any = load_handler("log_processor")
        module.clock = clock
        module.emit = Outputs()
        return module

    yield start
    for name in [n for n in sys.modules if n.split(".")[0] == "log_processing"]:
        del sys.modules[name]


@pytest.fixture
def processor(sandbox: Callable[[], ModuleType]) -> ModuleType:
    return sandbox()


def run(module: ModuleType, event: Any, context: LambdaContext | None = None) -> dict[str, Any]:
    result = module.lambda_handler(event, context or LambdaContext())
    assert result["statusCode"] == 200
    return json.loads(result["body"])


def counts(module: ModuleType, lines: list[str]) -> tuple[int, int]:
    """Error and critical lines, counted by the handler in a dry run (no AWS calls)."""
    body = run(module, {**subscription_event(lines), "opskit": {"dryRun": True}})
    return body["error_count"], body["critical_errors"]


def naive(lines: list[str], errors: list[str], critical: list[str]) -> tuple[list[int], list[int]]:
    """The definition: re.search of every pattern, case-insensitively, in every line."""
    is_critical = [any(re.search(p, line, re.IGNORECASE) for p in critical) for line in lines]
    is_error = [
        c or any(re.search(p, line, re.IGNORECASE) for p in errors)
        for c, line in zip(is_critical, lines, strict=True)
    ]
    return (
        [i for i, e in enumerate(is_error) if e],
        [i for i, c in enumerate(is_critical) if c],
    )


# --- the default patterns ---------------------------------------------------------------------

ERROR_LINES = [
    "ERROR charge declined for order 4242",
    "[error] 2026-11-25 worker stopped",
    '{"level":"Error","message":"bad input"}',
    "upload FAILED after 3 attempts",
    "Exception in thread main",
    "caught exception: KeyError",
    "upstream HTTP 507",
    'GET /api/orders HTTP/1.1" 508 157',
    "HTTP/2 520 from gateway",
    "status=599",
    "Status: 511",
    '"statusCode": 530',
    "status_code='509'",
    "http_status=598",
    "HTTP status 521",
    "Status Code: 522",
    "socket Timeout while reading",
    "Task timed out after 3.00 seconds",
    "Connection to cache-1 failed",
]
CRITICAL_LINES = [
    "Database connection pool: connection to db-1 failed",
    "database connection failed",
    "Out of memory: killed process 4242",
    "disk /var is full",
    "DISK FULL",
    "security policy violation by user 42",
    "HTTP/1.1 500 Internal Server Error",
    "status=505",
    '"status": 501',
    "FATAL: cannot continue",
    "fatal error in main loop",
]
ORDINARY_LINES = [
    "took 503ms",
    "request id=1500 done",
    "wrote 503 bytes",
    "status=200 size=503",
    "GET /api/orders HTTP/1.1 200 503",
    "retry 5031 of 9999",
    "latency 503.2 ms",
    "port 5000 open",
    "TypeError: unsupported operand",
    "errors=0 warnings=3",
    "terrorist attack simulation",
    "timeouts: 0",
    "handled 0 exceptions",
    "connection established",
    "database connection ok",
    "disk usage 40%",
    "security group sg-1234 updated",
    "http://example.com/503",
    "https://status.example.com/500",
    "status=5xx not seen",
    "outofmemory flag cleared",
    "fatalistic logging disabled",
    "prefailed check",
]


@pytest.mark.parametrize("line", ERROR_LINES)
def test_each_default_error_pattern_counts_the_line_as_an_error(processor, line):
    assert counts(processor, [line]) == (1, 0)


@pytest.mark.parametrize("line", CRITICAL_LINES)
def test_each_default_critical_pattern_counts_the_line_as_critical_and_as_an_error(processor, line):
    assert counts(processor, [line]) == (1, 1)


@pytest.mark.parametrize("line", ORDINARY_LINES)
def test_numbers_that_merely_contain_5xx_and_words_inside_words_are_not_errors(processor, line):
    assert counts(processor, [line]) == (0, 0)


def test_matching_ignores_case_and_a_multi_line_event_counts_once(processor):
    lines = ["error", "Error", "eRRoR", "Traceback:\n  File x\nValueError\nprocess FAILED\nerror"]
    assert counts(processor, lines) == (4, 0)


def test_non_ascii_lines_are_matched_like_any_other(processor):
    lines = ["Grüße: connection to db failed ✗", "FAİLED İstanbul", "ünicode only", "Ошибка error"]
    assert counts(processor, lines) == (3, 0)


# --- custom patterns ----------------------------------------------------------------------


def test_patterns_from_the_environment_replace_the_defaults(configure, sandbox):
    configure(
        ERROR_PATTERNS=json.dumps([r"\bwarn(ing)?\b", r"\d{3} ms"]),
        CRITICAL_PATTERNS=json.dumps([r"\bpanic\b"]),
    )
    module = sandbox()
    lines = ["ERROR default no more", "WARNING disk", "took 503 ms", "kernel PANIC", "fatal"]
    assert counts(module, lines) == (3, 1)


def test_an_empty_critical_list_means_nothing_is_critical(configure, sandbox):
    configure(CRITICAL_PATTERNS="[]")
    assert counts(sandbox(), ["FATAL: out of memory", "ERROR x"]) == (1, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "ERROR_PATTERNS must be a JSON list of regular expressions"),
        ('{"a": 1}', "ERROR_PATTERNS must be a JSON list of non-empty strings"),
        ("[1]", "ERROR_PATTERNS must be a JSON list of non-empty strings"),
        ('["ok", ""]', "ERROR_PATTERNS must be a JSON list of non-empty strings"),
        ('["ok", "("]', "ERROR_PATTERNS[1] '(' is not valid"),
    ],
)
def test_a_bad_pattern_list_is_a_configuration_error_naming_it(configure, sandbox, value, message):
    configure(ERROR_PATTERNS=value)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        sandbox().lambda_handler(subscription_event(["x"]), LambdaContext())


# --- the shortcut never changes the answer ------------------------------------------------

VOCABULARY = " ".join(
    [
        "error errors Error: [ERROR] TypeError xerror error_code failed FAILED prefailed",
        "failedover exception Exception: NullPointerException timeout Timeout timed out",
        "timeouts time-out connection Connection database disk full Disk is FULL",
        "security violation out of memory Out-Of-Memory fatal FATAL fatalistic http",
        "HTTP/1.1 HTTP/2 https:// status status= Status: statusCode statusCode=",
        "status_code: http_status= httpstatus= HTTP-status 500 501 502 503 504 505",
        "506 599 5000 1500 503ms 503.2 503, '503' \"503\" = : \" ' id=1500 took ok",
        "done the a of in \u0130 \u0131 \u017f \u00e9 \u00dc \u2717 \t",
    ]
).split(" ")
"""Words that are, nearly are, or surround what the default patterns look for, and
non-ASCII letters that fold onto ASCII ones (U+0130, U+0131, U+017F)."""


def random_lines(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = [rng.choice(VOCABULARY) for _ in range(rng.randrange(1, 9))]
        separators = [rng.choice([" ", " ", "", "=", ":", "\t", '"', "\n"]) for _ in words]
        lines.append("".join(w + s for w, s in zip(words, separators, strict=True)))
    return lines


def classifier_module(sandbox: Callable[[], ModuleType]) -> ModuleType:
    sandbox()
    import log_processing.patterns as patterns

    return patterns


@pytest.mark.parametrize("seed", range(4))
def test_default_patterns_classify_exactly_like_searching_every_pattern_in_every_line(
    sandbox, seed
):
    patterns = classifier_module(sandbox)
    lines = random_lines(seed, 3000)
    classifier = patterns.Classifier(
        patterns.DEFAULT_ERROR_PATTERNS, patterns.DEFAULT_CRITICAL_PATTERNS
    )
    verdict = classifier.classify(lines)
    errors, critical = naive(
        lines,
        [p.source for p in patterns.DEFAULT_ERROR_PATTERNS],
        [p.source for p in patterns.DEFAULT_CRITICAL_PATTERNS],
    )
    assert 100 < len(errors) < len(lines) and critical, "the corpus exercises both sides"
    assert (verdict.error_lines, verdict.critical_lines) == (errors, critical)


def test_each_exact_default_scanner_finds_exactly_the_lines_its_pattern_matches(sandbox):
    """Exact scanners skip the per-line check, so on ASCII text they must be the pattern."""
    patterns = classifier_module(sandbox)
    lines = [
        line
        for line in [*random_lines(7, 4000), *ERROR_LINES, *CRITICAL_LINES, *ORDINARY_LINES]
        if line.isascii()
    ]
    text = patterns.SEPARATOR.join(lines).lower()
    ends = list(itertools.accumulate(len(line) + 1 for line in lines))
    for pattern in patterns.DEFAULT_ERROR_PATTERNS + patterns.DEFAULT_CRITICAL_PATTERNS:
        matching = {i for i, line in enumerate(lines) if re.search(pattern.source, line, re.I)}
        found = {
            bisect.bisect_right(ends, m.start())
            for scanner in pattern.scanners
            for m in re.finditer(scanner, text)
        }
        assert matching, pattern.source
        if pattern.exact:
            assert found == matching, pattern.source
        else:
            assert found >= matching, pattern.source


def test_lines_holding_the_separator_are_classified_all_the_same(sandbox):
    patterns = classifier_module(sandbox)
    separator = patterns.SEPARATOR
    lines = [f"ERROR{separator}x", f"ok{separator}", "FATAL", f"{separator}status=503", "ok"]
    classifier = patterns.Classifier(
        patterns.DEFAULT_ERROR_PATTERNS, patterns.DEFAULT_CRITICAL_PATTERNS
    )
    verdict = classifier.classify(lines)
    assert (verdict.error_lines, verdict.critical_lines) == ([0, 2, 3], [2, 3])


@pytest.mark.parametrize("seed", range(3))
def test_custom_patterns_read_for_needles_classify_exactly_too(sandbox, seed):
    patterns = classifier_module(sandbox)
    custom_errors = [
        r"\berror\b",
        r"time(?:out|d out)",
        r"(?:http|status)\W{0,3}5\d\d\b",
        r"^fail",
        r"(?i:FATAL)|violation$",
        r"\d{4}",
        r"(?<!\w)conn\w*\s.*fail",
    ]
    custom_critical = [r"out.of.memory", r"disk\b.*\bfull", r"(?:security|safety)+\s+violation"]
    classifier = patterns.Classifier(
        [patterns.Pattern(p) for p in custom_errors],
        [patterns.Pattern(p) for p in custom_critical],
    )
    lines = random_lines(100 + seed, 2000)
    verdict = classifier.classify(lines)
    assert (verdict.error_lines, verdict.critical_lines) == naive(
        lines, custom_errors, custom_critical
    )


def test_custom_patterns_are_scanned_for_needles_not_searched_line_by_line(sandbox):
    patterns = classifier_module(sandbox)
    classifier = patterns.Classifier(
        [patterns.Pattern(r"\b(?:timeout|timed out)\b"), patterns.Pattern(r"conn.*\bfailed\b")],
        [patterns.Pattern(r"\bdb\b.*\bfailed\b"), patterns.Pattern(r"\d+")],
    )
    sources = sorted(scanner.regex.pattern for scanner in classifier._scanners)
    assert sources == ["failed", "timed\\ out", "timeout"]
    assert classifier._everywhere == [1], r"only \d+ has no literal: it is searched everywhere"


def test_a_pattern_takes_a_needle_another_pattern_already_needs_before_one_of_its_own(sandbox):
    patterns = classifier_module(sandbox)
    classifier = patterns.Classifier(
        [patterns.Pattern(r"\bfailed\b"), patterns.Pattern(r"\bconnection\b.*\bfailed\b")], []
    )
    sources = [scanner.regex.pattern for scanner in classifier._scanners]
    assert sources == ["failed"], "one pass serves both, not a second one for 'connection'"


def test_a_pattern_whose_only_literals_are_alternatives_is_scanned_for_each_of_them(sandbox):
    patterns = classifier_module(sandbox)
    classifier = patterns.Classifier([patterns.Pattern(r"\d(?:kb|mb)")], [])
    assert sorted(scanner.regex.pattern for scanner in classifier._scanners) == ["kb", "mb"]
    assert classifier._everywhere == [], "not searched in every line"


def test_a_pattern_starting_with_alternatives_is_matched_only_where_one_of_them_occurs(sandbox):
    patterns = classifier_module(sandbox)
    classifier = patterns.Classifier([patterns.Pattern(r"\b(?:error|fatal)\b")], [])
    [compiled] = classifier._compiled
    assert compiled.starts == ("error", "fatal")


def test_on_ascii_text_the_lines_exact_scanners_find_are_not_checked_again(sandbox, monkeypatch):
    patterns = classifier_module(sandbox)
    checked = []
    in_line = patterns._Compiled.in_line

    def recording(self, *args):
        checked.append(self.regex.pattern)
        return in_line(self, *args)

    monkeypatch.setattr(patterns._Compiled, "in_line", recording)
    classifier = patterns.Classifier(
        patterns.DEFAULT_ERROR_PATTERNS, patterns.DEFAULT_CRITICAL_PATTERNS
    )
    verdict = classifier.classify(["ERROR: disk is full", "FATAL", "request timed out", "ok"])
    assert (verdict.error_lines, verdict.critical_lines) == ([0, 1, 2], [0, 1])
    assert checked == []


# --- volume ----------------------------------------------------------------------------------


def test_a_10000_event_payload_is_counted_exactly_with_one_metrics_line(processor, aws):
    lines = random_lines(42, 10_000)
    body = run(processor, subscription_event(lines))
    errors, critical = naive(
        lines,
        [p.source for p in processor.DEFAULT_ERROR_PATTERNS],
        [p.source for p in processor.DEFAULT_CRITICAL_PATTERNS],
    )
    assert body == {
        "processed_events": 10_000,
        "error_count": len(errors),
        "critical_errors": len(critical),
    }
    [document] = processor.emit.documents
    assert (document["ErrorCount"], document["CriticalCount"]) == (len(errors), len(critical))


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_are_one_emf_line_per_delivery_by_log_group_and_by_environment(processor):
    run(processor, subscription_event(["ERROR a", "ok", "ok"]))
    [document] = processor.emit.documents
    assert document["_aws"]["Timestamp"] == int(START * 1000)
    directives = document["_aws"]["CloudWatchMetrics"]
    assert [(d["Namespace"], d["Dimensions"]) for d in directives] == [
        ("CustomApp/Errors", [["LogGroup"]]),
        ("CustomApp/Errors", [["Environment"]]),
    ]
    assert [m["Name"] for m in directives[0]["Metrics"]] == ["ErrorCount", "CriticalCount"]
    assert all(m["Unit"] == "Count" for d in directives for m in d["Metrics"])
    assert {key: document[key] for key in document if key != "_aws"} == {
        "LogGroup": LOG_GROUP,
        "Environment": "test",
        "ErrorCount": 1,
        "CriticalCount": 0,
        "ProcessedEvents": 3,
        "MalformedPayloads": 0,
    }


def test_a_quiet_delivery_still_reports_zeros(processor):
    run(processor, subscription_event(["all good"]))
    [document] = processor.emit.documents
    assert (document["ErrorCount"], document["CriticalCount"]) == (0, 0)


def test_metric_namespace_comes_from_the_environment(configure, sandbox):
    configure(METRIC_NAMESPACE="Shop/Logs")
    module = sandbox()
    run(module, subscription_event(["ERROR"]))
    [document] = module.emit.documents
    assert {d["Namespace"] for d in document["_aws"]["CloudWatchMetrics"]} == {"Shop/Logs"}


def test_emf_goes_to_standard_output_by_default(configure, sandbox, capsys):
    module = sandbox()
    module.emit = print
    run(module, subscription_event(["ERROR"]))
    [line] = [line for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert json.loads(line)["ErrorCount"] == 1


# --- control messages -----------------------------------------------------------------------


def test_a_control_message_is_acknowledged_and_ignored(processor, aws):
    assert run(processor, CONTROL_EVENT) == {
        "processed_events": 0,
        "error_count": 0,
        "critical_errors": 0,
    }
    assert processor.emit.lines == []
    assert aws.alerts() == []


def test_a_control_message_keeps_its_owner_and_names_and_may_leave_them_out(sandbox):
    sandbox()
    from log_processing.payload import decode

    named = {"owner": "CloudwatchLogs", "logGroup": "/aws/lambda/a", "logStream": "s"}
    batch = decode(raw_event(encode({"messageType": "CONTROL_MESSAGE", **named})))
    bare = decode(raw_event(encode({"messageType": "CONTROL_MESSAGE"})))

    assert (batch.is_control, batch.owner, batch.log_group, batch.log_stream) == (
        True,
        "CloudwatchLogs",
        "/aws/lambda/a",
        "s",
    )
    assert (bare.is_control, bare.owner, bare.log_group, bare.log_stream) == (True, "", "", "")


# --- alerts ------------------------------------------------------------------------------------


def test_critical_lines_alert_the_topic_with_collapsed_samples(processor, aws):
    lines = [
        "FATAL: database connection failed",
        "ERROR ignored here",
        "FATAL: database connection failed",
        "Out of memory: killed process 42",
        "FATAL: database connection failed",
    ]
    run(processor, subscription_event(lines))
    [alert] = aws.alerts()
    assert alert["Subject"] == f"[CRITICAL] test: 4 critical lines in {LOG_GROUP}"
    message = alert["Message"]
    assert "4 critical and 5 error lines among 5 log events." in message
    assert "  3x  FATAL: database connection failed\n" in message
    assert "  1x  Out of memory: killed process 42\n" in message
    assert "ERROR ignored here" not in message
    assert f"Log stream:  {LOG_STREAM}" in message
    assert f"Account:     {ACCOUNT}  Region: {REGION}  Environment: test" in message
    assert "Log events:  2026-11-25 10:15:30 UTC to 2026-11-25 10:15:30 UTC" in message
    assert "no sooner than 2026-11-25 10:30:30 UTC" in message
    assert (
        f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
        "#logsV2:log-groups/log-group/$252Faws$252Flambda$252Forders/log-events/"
        "2026$252F11$252F25$252F$255B$2524LATEST$255D0123456789abcdef"
    ) in message
    attributes = alert["MessageAttributes"]
    assert attributes["severity"]["Value"] == "critical"
    assert attributes["logGroup"]["Value"] == LOG_GROUP


@pytest.mark.parametrize(
    ("region", "console"),
    [("cn-north-1", "https://console.amazonaws.cn/"), ("us-iso-east-1", None)],
    ids=["aws-cn", "aws-iso"],
)
def test_the_alert_links_to_its_partitions_console_or_to_none(processor, region, console):
    from log_processing import alerts

    alert = alerts.Alert(
        environment="test",
        account=ACCOUNT,
        region=region,
        log_group=LOG_GROUP,
        log_stream=LOG_STREAM,
        processed_events=1,
        error_lines=1,
        critical_lines=1,
        first_at=None,
        last_at=None,
        samples=[],
        distinct=0,
        claim=alerts.Claim(allowed=True),
        window_seconds=900,
        now=time.time(),
    )
    links = [line for line in alerts.body(alert).splitlines() if line.startswith("Logs: ")]
    if console is None:
        assert links == [], "no public console: no link beats a wrong one"
    else:
        [link] = links
        assert link.startswith(f"Logs: {console}cloudwatch/home?region={region}#logsV2:")


def test_at_most_five_distinct_samples_each_cut_to_500_characters(processor, aws):
    lines = [f"FATAL {i} " + "x" * 2000 for i in range(8)]
    run(processor, subscription_event(lines))
    [alert] = aws.alerts()
    samples = [line for line in alert["Message"].splitlines() if line.startswith("  1x  ")]
    assert len(samples) == 5
    assert all(len(line) == len("  1x  ") + 500 and line.endswith("...") for line in samples)
    assert "Critical lines (8 distinct, the first 5 shown):" in alert["Message"]


def test_the_subject_stays_under_100_characters_and_keeps_the_end_of_a_long_log_group(
    processor, aws
):
    log_group = "/aws/" + "very-long-service-name/" * 21 + "payments-worker"
    assert len(log_group) > 500
    run(processor, subscription_event(["FATAL"], log_group=log_group))
    [alert] = aws.alerts()
    assert len(alert["Subject"]) < 100
    assert alert["Subject"].startswith("[CRITICAL] test: 1 critical line in ...")
    assert alert["Subject"].endswith("/payments-worker")


def test_the_log_group_attribute_keeps_the_first_256_characters_of_a_long_log_group(processor, aws):
    log_group = "/aws/lambda/" + "x" * 300
    run(processor, subscription_event(["FATAL"], log_group=log_group))
    [alert] = aws.alerts()
    assert alert["MessageAttributes"]["logGroup"]["Value"] == log_group[:256]


def test_the_body_stays_within_sns_limits_even_for_huge_lines(processor, aws):
    lines = [f"FATAL {i}: " + "é" * 100_000 for i in range(3)]
    run(processor, subscription_event(lines))
    [alert] = aws.alerts()
    assert len(alert["Message"].encode()) < 256 * 1024


def test_no_critical_lines_no_alert(processor, aws):
    run(processor, subscription_event(["ERROR a", "Exception b"]))
    assert aws.alerts() == []


# --- rate limiting ---------------------------------------------------------------------------


def test_a_storm_alerts_once_per_window_then_reports_what_it_held_back(processor, aws):
    for _ in range(5):
        run(processor, subscription_event(["FATAL: a", "FATAL: b"]))
    assert len(aws.alerts()) == 1, "one alert for the first delivery of the window"

    processor.clock.now += WINDOW
    run(processor, subscription_event(["FATAL: c"]))
    [alert] = aws.alerts()
    assert (
        "Held back since the previous alert (last alert 2026-11-25 10:15:30 UTC): "
        "8 critical lines in 4 deliveries."
    ) in alert["Message"]


def test_the_window_is_15_minutes_when_the_environment_sets_none(configure, sandbox, aws):
    configure(ALERT_WINDOW_SECONDS=None)
    module = sandbox()
    run(module, subscription_event(["FATAL: a"]))
    assert len(aws.alerts()) == 1

    module.clock.now += 899
    run(module, subscription_event(["FATAL: b"]))
    assert aws.alerts() == [], "still within the 900 s window"

    module.clock.now += 1
    run(module, subscription_event(["FATAL: c"]))
    assert len(aws.alerts()) == 1, "the window has ended"


def test_a_window_of_0_seconds_alerts_every_delivery(configure, sandbox, aws):
    configure(ALERT_WINDOW_SECONDS="0")
    module = sandbox()
    for _ in range(3):
        run(module, subscription_event(["FATAL"]))
    assert len(aws.alerts()) == 3


def test_the_window_holds_across_sandboxes(sandbox, aws):
    """Concurrent deliveries land in different sandboxes: their memory is not shared."""
    first, second = sandbox(), sandbox()
    assert first is not second and first.alerts is not second.alerts
    run(first, subscription_event(["FATAL: x"]))
    run(second, subscription_event(["FATAL: y"]))
    assert len(aws.alerts()) == 1

    second.clock.now += WINDOW
    run(second, subscription_event(["FATAL: z"]))
    [alert] = aws.alerts()
    assert "1 critical line in 1 delivery." in alert["Message"]


def test_windows_are_per_log_group(processor, aws):
    run(processor, subscription_event(["FATAL"], log_group="/aws/lambda/a"))
    run(processor, subscription_event(["FATAL"], log_group="/aws/lambda/b"))
    subjects = sorted(alert["Subject"] for alert in aws.alerts())
    assert [subject.split(" in ")[-1] for subject in subjects] == ["/aws/lambda/a", "/aws/lambda/b"]


def test_the_window_item_expires_a_day_after_the_alert(processor, aws):
    run(processor, subscription_event(["FATAL"]))
    item = aws.dynamodb.get_item(TableName=aws.table, Key={"logGroup": {"S": LOG_GROUP}})["Item"]
    assert int(item["alertedAt"]["N"]) == int(START)
    assert int(item["expiresAt"]["N"]) == int(START) + 86_400


def test_without_the_table_each_sandbox_still_limits_itself(configure, sandbox, aws):
    configure(RATE_LIMIT_TABLE=f"missing-{uuid.uuid4().hex[:8]}")
    module = sandbox()
    for _ in range(3):
        run(module, subscription_event(["FATAL"]))
    assert len(aws.alerts()) == 1, "fails open once, then the sandbox's own window holds"


def test_without_the_table_the_sandbox_reports_what_it_held_back_when_its_window_ends(
    configure, sandbox, aws
):
    configure(RATE_LIMIT_TABLE=f"missing-{uuid.uuid4().hex[:8]}")
    module = sandbox()
    run(module, subscription_event(["FATAL: a"]))
    run(module, subscription_event(["FATAL: b", "FATAL: c"]))
    run(module, subscription_event(["FATAL: d"]))
    assert len(aws.alerts()) == 1

    module.clock.now += WINDOW
    run(module, subscription_event(["FATAL: e"]))

    [alert] = aws.alerts()
    assert (
        "Held back since the previous alert (last alert 2026-11-25 10:15:30 UTC): "
        "3 critical lines in 2 deliveries."
    ) in alert["Message"]

    run(module, subscription_event(["FATAL: f"]))
    module.clock.now += WINDOW
    run(module, subscription_event(["FATAL: g"]))

    [alert] = aws.alerts()
    assert "Held back since the previous alert" in alert["Message"]
    assert "1 critical line in 1 delivery." in alert["Message"], "counted from the last alert"


def test_without_the_table_an_alert_that_could_not_be_sent_frees_the_sandboxs_window(
    configure, sandbox, aws, monkeypatch
):
    configure(RATE_LIMIT_TABLE=f"missing-{uuid.uuid4().hex[:8]}")
    module = sandbox()
    fail_one_alert(module, monkeypatch)
    run(module, subscription_event(["FATAL"]))
    assert len(aws.alerts()) == 1, "the next delivery alerts at once"


def fail_one_alert(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One delivery whose alert SNS refuses: the handler raises, so Lambda retries it."""
    from opskit_common import reports

    def broken(*args: Any, **kwargs: Any) -> str:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "down"}}, "Publish")

    with monkeypatch.context() as patched:
        patched.setattr(reports, "publish", broken)
        with pytest.raises(ClientError):
            module.lambda_handler(subscription_event(["FATAL"]), LambdaContext())


def test_an_alert_that_could_not_be_sent_raises_and_frees_the_window(processor, aws, monkeypatch):
    fail_one_alert(processor, monkeypatch)
    run(processor, subscription_event(["FATAL"]))
    assert len(aws.alerts()) == 1, "the next delivery alerts at once"


# --- malformed payloads ----------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_event(data: str) -> dict[str, Any]:
    return {"awslogs": {"data": data}}


GOOD = json.dumps(
    {"messageType": "DATA_MESSAGE", "owner": ACCOUNT, "logGroup": "g", "logStream": "s"}
)

GOOD_DATA = b64(gzip.compress(GOOD.encode()))

MALFORMED = {
    "no awslogs": ({"detail": {}}, "bad-shape", "no string awslogs.data"),
    "data not a string": ({"awslogs": {"data": 42}}, "bad-shape", "no string awslogs.data"),
    "not base64": (raw_event("not base64!!"), "not-base64", "awslogs.data is not base64"),
    "base64 with a stray character": (
        raw_event(GOOD_DATA[:8] + "*" + GOOD_DATA[8:]),
        "not-base64",
        "awslogs.data is not base64",
    ),
    "not gzip": (raw_event(b64(b"plain text")), "not-gzip", "awslogs.data is not gzip"),
    "zlib instead of gzip": (
        raw_event(b64(zlib.compress(GOOD.encode()))),
        "not-gzip",
        "awslogs.data is not gzip",
    ),
    "truncated gzip": (
        raw_event(b64(gzip.compress(GOOD.encode())[:-12])),
        "not-gzip",
        "truncated gzip",
    ),
    "garbage after gzip": (
        raw_event(b64(gzip.compress(GOOD.encode()) + b"junk")),
        "not-gzip",
        "not gzip",
    ),
    "not json": (raw_event(b64(gzip.compress(b"{nope"))), "not-json", "is not JSON"),
    "json not an object": (raw_event(encode([1, 2])), "bad-shape", "must be a JSON object"),
    "unknown message type": (
        raw_event(encode({"messageType": "PING"})),
        "bad-shape",
        "messageType 'PING' is not DATA_MESSAGE or CONTROL_MESSAGE",
    ),
    "long unknown message type": (
        raw_event(encode({"messageType": "PING" + "G" * 100})),
        "bad-shape",
        "messageType 'PING" + "G" * 36 + "' is not DATA_MESSAGE",
    ),
    "no log events": (
        raw_event(encode(json.loads(GOOD))),
        "bad-shape",
        "'logEvents' must be a list, got null",
    ),
    "event without message": (
        raw_event(encode({**json.loads(GOOD), "logEvents": [{"message": "a"}, {"id": "1"}]})),
        "bad-shape",
        "logEvents[1] is missing required field 'message'",
    ),
    "message not a string": (
        raw_event(encode({**json.loads(GOOD), "logEvents": [{"message": 7}]})),
        "bad-shape",
        "logEvents[0].message must be a string, got int",
    ),
    "event not an object": (
        raw_event(encode({**json.loads(GOOD), "logEvents": ["a"]})),
        "bad-shape",
        "logEvents[0] must be an object, got str",
    ),
    "no log group": (
        raw_event(encode({**json.loads(GOOD), "logGroup": None, "logEvents": []})),
        "bad-shape",
        "missing required field 'logGroup'",
    ),
    "empty log group": (
        raw_event(encode({**json.loads(GOOD), "logGroup": "", "logEvents": []})),
        "bad-shape",
        "field 'logGroup' must be a non-empty string, got str",
    ),
    "log stream not a string": (
        raw_event(encode({**json.loads(GOOD), "logStream": 42, "logEvents": []})),
        "bad-shape",
        "field 'logStream' must be a non-empty string, got int",
    ),
    "log group longer than CloudWatch allows": (
        raw_event(encode({**json.loads(GOOD), "logGroup": "g" * 1025, "logEvents": []})),
        "bad-shape",
        "field 'logGroup' is 1025 characters long, too long",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_payload_raises_a_typed_error_and_counts_as_malformed(processor, aws, name):
    """Raising sends the asynchronous event to the dead-letter queue (no retries)."""
    from log_processing.payload import MalformedPayloadError

    event, kind, message = MALFORMED[name]
    with pytest.raises(MalformedPayloadError, match=re.escape(message)) as error:
        processor.lambda_handler(event, LambdaContext())
    assert error.value.kind == kind
    [document] = processor.emit.documents
    assert document["MalformedPayloads"] == 1
    assert document["_aws"]["Timestamp"] == int(START * 1000)
    assert document["Environment"] == "test"
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Environment"]]
    assert aws.alerts() == []


def test_the_longest_accepted_name_is_1024_characters(processor):
    event = raw_event(encode({**json.loads(GOOD), "logGroup": "g" * 1024, "logEvents": []}))
    assert run(processor, event)["processed_events"] == 0


def test_a_payload_of_exactly_the_cap_is_read_and_one_byte_more_is_not(sandbox):
    sandbox()
    from log_processing.payload import MalformedPayloadError, gunzip

    compressed = gzip.compress(bytes(300_000))

    assert len(gunzip(compressed, max_bytes=300_000)) == 300_000
    with pytest.raises(MalformedPayloadError, match="more than 299999 bytes"):
        gunzip(compressed, max_bytes=299_999)


def padded_payload(size: int) -> dict[str, Any]:
    """A subscription event whose JSON is `size` bytes once decompressed (padded with spaces)."""
    document = json.dumps({**json.loads(GOOD), "logEvents": [{"message": "ERROR"}]}).encode()
    return raw_event(b64(gzip.compress(document + b" " * (size - len(document)))))


def test_the_default_cap_is_10_mib_of_decompressed_payload(processor):
    from log_processing.payload import MalformedPayloadError

    cap = 10 * 1024 * 1024
    assert run(processor, padded_payload(cap))["error_count"] == 1
    with pytest.raises(MalformedPayloadError, match=f"more than {cap} bytes") as error:
        processor.lambda_handler(padded_payload(cap + 1), LambdaContext())
    assert error.value.kind == "too-large"


def test_the_smallest_cap_accepted_is_1024_bytes(configure, sandbox):
    configure(MAX_DECOMPRESSED_BYTES="1024")
    assert run(sandbox(), padded_payload(1024))["error_count"] == 1

    configure(MAX_DECOMPRESSED_BYTES="1023")
    with pytest.raises(ConfigurationError, match="MAX_DECOMPRESSED_BYTES must be >= 1024"):
        sandbox().lambda_handler(padded_payload(1023), LambdaContext())


def gzip_bomb(total_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    return b"".join(
        [
            *(compressor.compress(block) for _ in range(total_bytes // len(block))),
            compressor.flush(),
        ]
    )


def test_a_gzip_bomb_is_stopped_at_the_cap_quickly_and_in_bounded_memory(configure, sandbox):
    cap = 2 * 1024 * 1024
    configure(MAX_DECOMPRESSED_BYTES=str(cap))
    module = sandbox()
    event = raw_event(b64(gzip_bomb(64 * 1024 * 1024)))
    from log_processing.payload import MalformedPayloadError

    tracemalloc.start()
    started = time.thread_time()
    try:
        with pytest.raises(MalformedPayloadError, match="more than 2097152 bytes") as error:
            module.lambda_handler(event, LambdaContext())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.value.kind == "too-large"
    assert time.thread_time() - started < 1.0
    assert peak <= 2 * cap, f"peak {peak} bytes"


def test_concatenated_gzip_members_and_zero_padding_are_read(processor):
    members = gzip.compress(b'{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g",')
    members += gzip.compress(b'"logStream":"s","logEvents":[{"message":"ERROR"}]}')
    body = run(processor, raw_event(b64(members + bytes(64))))
    assert body["error_count"] == 1


# --- running by hand ------------------------------------------------------------------------


def test_the_smoke_test_checks_configuration_without_processing(processor, aws):
    result = processor.lambda_handler({"opskit": {"smokeTest": True}}, LambdaContext())
    assert result["statusCode"] == 200
    body = json.loads(result["body"])
    assert body["smokeTest"] == "passed"
    assert (body["errorPatterns"], body["criticalPatterns"]) == (6, 6)
    assert processor.emit.lines == [] and aws.alerts() == []


def test_the_smoke_test_fails_without_an_alert_topic(configure, sandbox):
    configure(ALERT_TOPIC_ARN=None)
    with pytest.raises(ConfigurationError, match="ALERT_TOPIC_ARN is not set"):
        sandbox().lambda_handler({"opskit": {"smokeTest": True}}, LambdaContext())


def test_a_dry_run_counts_without_metrics_windows_or_alerts(processor, aws):
    event = {**subscription_event(["FATAL", "ERROR", "ok"]), "opskit": {"dryRun": True}}
    assert run(processor, event) == {
        "processed_events": 3,
        "error_count": 2,
        "critical_errors": 1,
        "dry_run": True,
    }
    assert processor.emit.lines == [] and aws.alerts() == []
    assert "Item" not in aws.dynamodb.get_item(
        TableName=aws.table, Key={"logGroup": {"S": LOG_GROUP}}
    )


def test_process_called_without_dry_run_is_a_real_run(processor):
    """How the benchmarks call it: metrics are emitted as by the handler."""
    body = json.loads(
        processor.process(subscription_event(["ERROR"]), processor.settings())["body"]
    )
    assert "dry_run" not in body
    [document] = processor.emit.documents
    assert document["ErrorCount"] == 1


def test_log_lines_name_the_service_from_the_environment_or_log_processor(configure, sandbox):
    configure(POWERTOOLS_SERVICE_NAME="orders-logs")
    assert sandbox().logger.service == "orders-logs"

    configure(POWERTOOLS_SERVICE_NAME=None)
    assert sandbox().logger.service == "log-processor"
