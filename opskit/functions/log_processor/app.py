"""Log processor: CloudWatch Logs subscription deliveries -> error metrics and critical alerts.

Invoked asynchronously by subscription filters with ``{"awslogs": {"data": <base64 gzip
JSON>}}``. Counts error and critical lines (one EMF metrics line per delivery), alerts
the critical topic with samples, at most once per window per log group, and rejects a
payload it cannot read with a typed error, so the event lands in the dead-letter queue.

The hot path imports neither boto3 nor Powertools Metrics: a delivery without critical
lines touches no AWS API.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.logging import Logger
from log_processing import alerts, metrics
from log_processing.patterns import (
    DEFAULT_CRITICAL_PATTERNS,
    DEFAULT_ERROR_PATTERNS,
    Classifier,
    PatternError,
    parse_pattern_list,
)
from log_processing.payload import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    LogBatch,
    MalformedPayloadError,
    decode,
)
from opskit_common.config import ConfigurationError, env_int, require_env
from opskit_common.startup import imports_done

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "log-processor")

DEFAULT_NAMESPACE = "CustomApp/Errors"
DEFAULT_ALERT_WINDOW_SECONDS = 900

clock = time.time  # replaced in tests
emit = print  # EMF lines go to stdout, where Lambda's log capture turns them into metrics


@dataclass(frozen=True)
class Settings:
    """The function's configuration, read from its environment once per sandbox."""

    namespace: str
    environment: str
    rate_limit_table: str | None
    window_seconds: int
    max_bytes: int
    classifier: Classifier


_settings: Settings | None = None
_limiter: alerts.RateLimiter | None = None
_fallback: alerts.LocalRateLimiter | None = None


def settings() -> Settings:
    """Parsed and compiled on first use, then reused by every invocation of the sandbox."""
    global _settings
    if _settings is None:
        try:
            error_patterns = _patterns("ERROR_PATTERNS", DEFAULT_ERROR_PATTERNS)
            critical_patterns = _patterns("CRITICAL_PATTERNS", DEFAULT_CRITICAL_PATTERNS)
        except PatternError as error:
            raise ConfigurationError(f"environment variable {error}") from None
        _settings = Settings(
            namespace=os.environ.get("METRIC_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
            environment=os.environ.get("ENVIRONMENT_NAME", "").strip(),
            rate_limit_table=os.environ.get("RATE_LIMIT_TABLE", "").strip() or None,
            window_seconds=env_int(
                "ALERT_WINDOW_SECONDS", default=DEFAULT_ALERT_WINDOW_SECONDS, minimum=0
            ),
            max_bytes=env_int(
                "MAX_DECOMPRESSED_BYTES", default=DEFAULT_MAX_DECOMPRESSED_BYTES, minimum=1024
            ),
            classifier=Classifier(error_patterns, critical_patterns),
        )
    return _settings


def _patterns(name: str, default: Any) -> Any:
    raw = os.environ.get(name, "").strip()
    return parse_pattern_list(raw, name=name) if raw else default


def _flag(event: Any, name: str) -> bool:
    marker = event.get("opskit") if isinstance(event, dict) else None
    return isinstance(marker, dict) and marker.get(name) is True


def check_configuration() -> dict[str, Any]:
    """What the deployment's smoke test runs: configuration only, nothing published."""
    config = settings()
    require_env("ALERT_TOPIC_ARN")
    return {
        "smokeTest": "passed",
        "errorPatterns": len(config.classifier.error_patterns),
        "criticalPatterns": len(config.classifier.critical_patterns),
        "scanners": config.classifier.scanner_count,
    }


def _response(processed: int, errors: int, critical: int, **extra: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "body": json.dumps(
            {"processed_events": processed, "error_count": errors, "critical_errors": critical}
            | extra
        ),
    }


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    if _flag(event, "smokeTest"):
        result = check_configuration()
        logger.info("Smoke test passed", extra=result)
        return {"statusCode": 200, "body": json.dumps(result)}
    return process(event, settings(), dry_run=_flag(event, "dryRun"))


def process(event: Any, config: Settings, *, dry_run: bool = False) -> dict[str, Any]:
    """Counts, reports and alerts one delivery; raises MalformedPayloadError for bad input."""
    try:
        batch = decode(event, max_bytes=config.max_bytes)
    except MalformedPayloadError as error:
        if not dry_run:
            emit(
                metrics.malformed(
                    namespace=config.namespace,
                    environment=config.environment,
                    timestamp_ms=int(clock() * 1000),
                )
            )
        logger.error(
            "Malformed subscription payload; it goes to the dead-letter queue",
            extra={"problem": error.kind, "error": str(error)},
        )
        raise
    if batch.is_control:
        logger.info("Control message acknowledged", extra={"log_group": batch.log_group})
        return _response(0, 0, 0)

    verdict = config.classifier.classify(batch.lines, joined=batch.joined)
    processed, errors, critical = len(batch.lines), verdict.error_count, verdict.critical_count
    if dry_run:
        return _response(processed, errors, critical, dry_run=True)
    emit(
        metrics.delivery(
            namespace=config.namespace,
            environment=config.environment,
            log_group=batch.log_group,
            processed=processed,
            errors=errors,
            critical=critical,
            timestamp_ms=int(clock() * 1000),
        )
    )
    if critical:
        alert(batch, verdict.critical_messages(), errors=errors, config=config)
    else:
        logger.debug(
            "Delivery processed",
            extra={"log_group": batch.log_group, "events": processed, "errors": errors},
        )
    return _response(processed, errors, critical)


def alert(batch: LogBatch, critical_lines: list[str], *, errors: int, config: Settings) -> None:
    """Publishes the critical alert, unless this log group alerted within the window."""
    now = clock()
    limiter = rate_limiter(config)
    key = batch.log_group
    try:
        claim = limiter.claim(key, now=now, lines=len(critical_lines))
    except Exception as error:  # the store is down: rate-limit in this sandbox instead
        logger.warning(
            "Rate-limit table unavailable; limiting in this sandbox only",
            extra={"error": f"{type(error).__name__}: {error}"},
        )
        limiter = fallback_limiter(config)
        claim = limiter.claim(key, now=now, lines=len(critical_lines))
    if not claim.allowed:
        logger.info(
            "Critical lines held back: this log group alerted within the window",
            extra={"log_group": key, "critical": len(critical_lines)},
        )
        return

    from opskit_common.clients import client
    from opskit_common.reports import publish

    shown, distinct = alerts.samples(critical_lines)
    message = alerts.body(
        alerts.Alert(
            environment=config.environment,
            account=batch.owner,
            region=os.environ.get("AWS_REGION", ""),
            log_group=batch.log_group,
            log_stream=batch.log_stream,
            processed_events=len(batch.lines),
            error_lines=errors,
            critical_lines=len(critical_lines),
            first_at=alerts.event_time(batch.events[0]),
            last_at=alerts.event_time(batch.events[-1]),
            samples=shown,
            distinct=distinct,
            claim=claim,
            window_seconds=config.window_seconds,
            now=now,
        )
    )
    try:
        message_id = publish(
            require_env("ALERT_TOPIC_ARN"),
            subject_line=alerts.subject(
                environment=config.environment,
                log_group=batch.log_group,
                critical_lines=len(critical_lines),
            ),
            message=message,
            attributes={"severity": "critical", "logGroup": batch.log_group[:256]},
            sns=client("sns"),
        )
    except BaseException:
        _give_back(limiter, key, now=now, previous=claim.previous_alert_at)
        raise
    logger.info(
        "Critical alert published",
        extra={"log_group": key, "critical": len(critical_lines), "message_id": message_id},
    )


def _give_back(
    limiter: alerts.RateLimiter, key: str, *, now: float, previous: float | None
) -> None:
    """An alert that could not be sent must not hold back the next one."""
    try:
        limiter.release(key, claimed_at=now, previous=previous)
    except Exception as error:
        logger.warning("Could not release the alert claim", extra={"error": str(error)})


def rate_limiter(config: Settings) -> alerts.RateLimiter:
    global _limiter
    if _limiter is None:
        if config.rate_limit_table:
            from opskit_common.clients import client

            _limiter = alerts.DynamoDbRateLimiter(
                config.rate_limit_table,
                window_seconds=config.window_seconds,
                client=client("dynamodb"),
            )
        else:
            _limiter = fallback_limiter(config)
    return _limiter


def fallback_limiter(config: Settings) -> alerts.LocalRateLimiter:
    global _fallback
    if _fallback is None:
        _fallback = alerts.LocalRateLimiter(window_seconds=config.window_seconds)
    return _fallback


imports_done()
