"""Specification of opskit_common.reports: SNS subjects and bodies that SNS always accepts."""

from __future__ import annotations

import json

import boto3
import pytest
from opskit_common.reports import (
    MAX_MESSAGE_BYTES,
    MAX_SUBJECT_CHARS,
    bounded,
    fit_message,
    publish,
    subject,
)

from tests.functions.conftest import REGION


def test_given_short_text_when_made_a_subject_then_it_is_unchanged() -> None:
    assert subject("Backup dev: 3 created, 0 failed") == "Backup dev: 3 created, 0 failed"


def test_given_long_multiline_unicode_text_then_subject_is_one_ascii_line_under_100() -> None:
    text = "Critical errors in /aws/lambda/" + "very-long-name-" * 20 + "\nsecond line — café"
    result = subject(text)
    assert len(result) <= MAX_SUBJECT_CHARS < 100
    assert result.isascii() and result.isprintable() and "\n" not in result
    assert result.endswith("...") and result.startswith("Critical errors in /aws/lambda/")


def test_given_only_control_characters_then_subject_is_a_placeholder_not_empty() -> None:
    assert subject("\n\t\x00") == "opskit report"


def test_given_message_within_limit_then_unchanged_and_over_limit_then_cut_on_a_char_boundary() -> (
    None
):
    assert fit_message("short") == "short"
    huge = "é" * MAX_MESSAGE_BYTES
    cut = fit_message(huge)
    assert len(cut.encode("utf-8")) <= MAX_MESSAGE_BYTES - 1024
    assert cut.endswith("bytes in all; cut to fit SNS]")
    assert f"[{len(huge.encode('utf-8'))} bytes in all" in cut


def test_given_more_items_than_the_limit_then_the_rest_are_counted_not_listed() -> None:
    assert bounded(["a", "b"], limit=3) == ["a", "b"]
    assert bounded([str(i) for i in range(10)], limit=3) == ["0", "1", "2", "... and 7 more"]


def test_given_a_topic_when_published_then_sns_accepts_subject_body_and_attributes(
    aws_environment: str,
) -> None:
    sns = boto3.client("sns", region_name=REGION, endpoint_url=aws_environment)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=aws_environment)
    topic_arn = sns.create_topic(Name="opskit-reports-test")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="opskit-reports-test")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)

    message_id = publish(
        topic_arn,
        subject_line="x" * 300,
        message="y" * (MAX_MESSAGE_BYTES + 10),
        attributes={"report": "test"},
    )

    received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    envelope = json.loads(received[0]["Body"])
    assert envelope["MessageId"] == message_id
    assert len(envelope["Subject"]) == MAX_SUBJECT_CHARS
    assert len(envelope["Message"].encode()) <= MAX_MESSAGE_BYTES
    assert envelope["MessageAttributes"]["report"]["Value"] == "test"


@pytest.mark.parametrize("bad", [None, ""])
def test_given_no_subject_text_then_placeholder(bad: str | None) -> None:
    assert subject(bad or "") == "opskit report"
