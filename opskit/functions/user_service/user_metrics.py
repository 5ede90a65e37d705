"""Hourly user metrics: how many users there are, and how many signed up in the last hour.

Runs on a schedule (hourly, enabled per profile). Publishes to ``METRICS_NAMESPACE``
with the dimension ``TableName`` (the users table, unique per environment, so two
environments in one account never share a metric):

- ``UsersCreated``: users created in the last full clock hour [h-1, h), timestamped at
  the start of that hour. A Query per UTC day touched on ``created-index`` with
  ``Select=COUNT``: it reads only that hour's users (eventually consistent, half a read
  unit per 4 KB of them), whatever the table's size.
- ``TotalUsers``: from ``USER_COUNT_SOURCE``:
  ``describe`` (default): the e-mail index's ItemCount from DescribeTable. Free (a
  control-plane call, no read units), but DynamoDB refreshes it about every six hours.
  ``scan``: a Select=COUNT Scan of the e-mail index, exact, costing half a read unit
  per 4 KB of the whole index on every run (about 37,000 read request units per run
  for a million users of ~300 bytes). Choose it when the table is small or exactness
  matters.
  A counter item kept by the API was rejected: every create and delete would write
  the same item, and transactions touching it would conflict with each other.

Environment: ``USERS_TABLE``, ``METRICS_NAMESPACE``, ``USER_COUNT_SOURCE``.
Event (all optional): ``{"window_end": "<ISO 8601>", "dryRun": true}``; ``window_end``
is rounded down to the hour (recount a past hour), ``dryRun`` computes without publishing.
``{"opskit": {"smokeTest": true}}`` (each deployment's post-traffic hook) is a dry run: it
reads what a run reads, with the function's permissions, and publishes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import users
from aws_lambda_powertools.logging import Logger
from opskit_common.clients import client
from opskit_common.config import env_choice, require_env
from opskit_common.events import is_smoke_test, optional, optional_bool, parse_timestamp
from opskit_common.startup import imports_done

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "user-metrics")

COUNT_SOURCES = ("describe", "scan")
HOUR = timedelta(hours=1)

clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731 (replaced in tests)


@dataclass(frozen=True)
class Figures:
    window_start: datetime
    window_end: datetime
    users_created: int
    total_users: int
    count_source: str

    def as_json(self) -> dict[str, Any]:
        return {
            "window_start": users.timestamp(self.window_start),
            "window_end": users.timestamp(self.window_end),
            "users_created": self.users_created,
            "total_users": self.total_users,
            "count_source": self.count_source,
        }


def hour_ending(moment: datetime) -> tuple[datetime, datetime]:
    """The full clock hour that ends at or before ``moment`` (UTC)."""
    end = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return end - HOUR, end


def collect(store: users.UserStore, *, now: datetime, count_source: str) -> Figures:
    start, end = hour_ending(now)
    total = store.exact_count() if count_source == "scan" else store.approximate_count()
    return Figures(
        window_start=start,
        window_end=end,
        users_created=store.count_created_between(start, end),
        total_users=total,
        count_source=count_source,
    )


def publish(figures: Figures, *, cloudwatch: Any, namespace: str, table_name: str) -> None:
    dimensions = [{"Name": "TableName", "Value": table_name}]
    cloudwatch.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": "UsersCreated",
                "Dimensions": dimensions,
                "Timestamp": figures.window_start,
                "Value": figures.users_created,
                "Unit": "Count",
            },
            {
                "MetricName": "TotalUsers",
                "Dimensions": dimensions,
                "Timestamp": figures.window_end,
                "Value": figures.total_users,
                "Unit": "Count",
            },
        ],
    )


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    event = event if event is not None else {}
    table_name = require_env("USERS_TABLE")
    namespace = require_env("METRICS_NAMESPACE")
    count_source = env_choice("USER_COUNT_SOURCE", COUNT_SOURCES, default="describe")
    dry_run = is_smoke_test(event) or optional_bool(event, "dryRun", default=False)
    window_end = optional(event, "window_end")
    now = parse_timestamp(window_end, field="window_end") if window_end is not None else clock()

    store = users.UserStore(table_name=table_name, dynamodb=client("dynamodb"))
    figures = collect(store, now=now, count_source=count_source)
    if not dry_run:
        publish(
            figures, cloudwatch=client("cloudwatch"), namespace=namespace, table_name=table_name
        )
    result = {**figures.as_json(), "published": not dry_run}
    logger.info("user metrics", extra=result)
    return result


imports_done()
