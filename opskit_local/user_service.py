"""The user service on the local emulator: its resources, and the API server of `make api`.

    python -m opskit_local.user_service [--port 8080] [--origin http://localhost:3000]

serves ``opskit/functions/user_service/api.py`` on 127.0.0.1 through the API Gateway
adapter, with stand-in Cognito claims on every request, against moto's server holding
the users table (keys and indexes as documented in ``users.py``), the user-created
topic, a queue subscribed to it (to see the events), and the page-token secret.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opskit_local.api_gateway import ApiServer, local_claims, resources_from_openapi
from opskit_local.emulator import Emulator
from opskit_local.functions import FUNCTIONS_DIR, load_function
from opskit_local.sandboxes import InProcess, Processes, Sandboxes

OPENAPI = FUNCTIONS_DIR / "user_service" / "openapi.json"
DEFAULT_PORT = 8080
DEFAULT_ORIGINS = ("http://localhost:3000",)


@dataclass(frozen=True)
class UserServiceResources:
    table_name: str
    topic_arn: str
    events_queue_url: str
    page_token_secret_arn: str
    allowed_origins: tuple[str, ...]

    def environment(self) -> dict[str, str]:
        """The API function's environment variables."""
        return {
            "USERS_TABLE": self.table_name,
            "USER_CREATED_TOPIC": self.topic_arn,
            "PAGE_TOKEN_SECRET_ARN": self.page_token_secret_arn,
            "ALLOWED_ORIGINS": ",".join(self.allowed_origins),
        }


def users_table_definition(table_name: str) -> dict[str, Any]:
    """CreateTable parameters for the users table, as ``users.py`` documents it.

    Without its stream: nothing reads it locally, and moto would keep every record.
    """
    all_attributes = {"ProjectionType": "ALL"}
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "email", "AttributeType": "S"},
            {"AttributeName": "created_day", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "email-index",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": all_attributes,
            },
            {
                "IndexName": "created-index",
                "KeySchema": [
                    {"AttributeName": "created_day", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": all_attributes,
            },
        ],
    }


STAND_IN_SENDER = "no-reply@example.com"


def _stand_in_function(name: str, variables: dict[str, Any], timeout: int = 29) -> dict[str, Any]:
    module = name.partition(".")[2]
    return {
        "Type": "AWS::Lambda::Function",
        "Metadata": {"opskit:function": name},
        "Properties": {
            "Handler": f"{module}.lambda_handler",
            "MemorySize": 256,
            "Timeout": timeout,
            "LoggingConfig": {"ApplicationLogLevel": "INFO", "LogFormat": "JSON"},
            "Environment": {
                "Variables": {"POWERTOOLS_SERVICE_NAME": module.replace("_", "-"), **variables}
            },
        },
    }


def stand_in_template(*, allowed_origins: Sequence[str] = DEFAULT_ORIGINS) -> dict[str, Any]:
    """The user service's four functions and their resources, shaped as a synthesized stack.

    `make invoke` and `make local` take a function's variables from the environment's
    template; in an environment without `userService`, these stand in for it: the
    variables and resources each handler documents (users table as ``users.py`` defines
    it, audit table keyed by ``audit_id`` with TTL ``ttl``, the user-created topic, the
    e-mail queue, a generated page-token secret, a sender identity). A function the real
    template has always wins over its stand-in here.
    """
    users = users_table_definition("users")
    table = {key: users[key] for key in ("KeySchema", "AttributeDefinitions")}
    ref = {"Ref": "UserServiceLocalUsersTable"}
    return {
        "Resources": {
            "UserServiceLocalUsersTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {**table, "GlobalSecondaryIndexes": users["GlobalSecondaryIndexes"]},
            },
            "UserServiceLocalAuditTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "KeySchema": [{"AttributeName": "audit_id", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "audit_id", "AttributeType": "S"}],
                    "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
                },
            },
            "UserServiceLocalUserCreatedTopic": {"Type": "AWS::SNS::Topic"},
            "UserServiceLocalEmailQueue": {"Type": "AWS::SQS::Queue"},
            "UserServiceLocalPageTokenSecret": {
                "Type": "AWS::SecretsManager::Secret",
                "Properties": {"GenerateSecretString": {"PasswordLength": 48}},
            },
            "UserServiceLocalSender": {
                "Type": "AWS::SES::EmailIdentity",
                "Properties": {"EmailIdentity": STAND_IN_SENDER},
            },
            "UserServiceLocalApi": _stand_in_function(
                "user_service.api",
                {
                    "USERS_TABLE": ref,
                    "USER_CREATED_TOPIC": {"Ref": "UserServiceLocalUserCreatedTopic"},
                    "PAGE_TOKEN_SECRET_ARN": {"Ref": "UserServiceLocalPageTokenSecret"},
                    "ALLOWED_ORIGINS": ",".join(allowed_origins),
                },
            ),
            "UserServiceLocalUserCreated": _stand_in_function(
                "user_service.user_created",
                {
                    "AUDIT_TABLE": {"Ref": "UserServiceLocalAuditTable"},
                    "EMAIL_QUEUE": {"Ref": "UserServiceLocalEmailQueue"},
                },
                timeout=30,
            ),
            "UserServiceLocalEmailSender": _stand_in_function(
                "user_service.email_sender", {"FROM_EMAIL": {"Ref": "UserServiceLocalSender"}}
            ),
            "UserServiceLocalUserMetrics": _stand_in_function(
                "user_service.user_metrics",
                {"USERS_TABLE": ref, "METRICS_NAMESPACE": "opskit/local/UserService"},
                timeout=60,
            ),
        }
    }


def create_resources(
    client: Callable[[str], Any],
    *,
    prefix: str = "users-local",
    allowed_origins: Sequence[str] = DEFAULT_ORIGINS,
) -> UserServiceResources:
    """Creates the user service's resources through ``client(service_name)``."""
    table_name = f"{prefix}-users"
    client("dynamodb").create_table(**users_table_definition(table_name))
    sns = client("sns")
    topic_arn = sns.create_topic(Name=f"{prefix}-user-created")["TopicArn"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{prefix}-user-created-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps({"event_type": ["user_created"]})},
    )
    secret_arn = client("secretsmanager").create_secret(
        Name=f"{prefix}/page-token-key", SecretString=secrets.token_urlsafe(48)
    )["ARN"]
    return UserServiceResources(
        table_name=table_name,
        topic_arn=topic_arn,
        events_queue_url=queue_url,
        page_token_secret_arn=secret_arn,
        allowed_origins=tuple(allowed_origins),
    )


def api_server(
    *, port: int = 0, claims: Mapping[str, str] | None = None, concurrency: int = 1
) -> ApiServer:
    """The API function behind the API Gateway adapter; its environment must be set.

    ``concurrency`` 1 runs the handler in this process; more start that many sandbox
    processes, which serve concurrent requests in parallel.
    """
    sandboxes: Sandboxes
    if concurrency > 1:
        sandboxes = Processes("user_service", "api", count=concurrency)
    else:
        sandboxes = InProcess(load_function("user_service", "api").lambda_handler)
    document = json.loads(OPENAPI.read_text(encoding="utf-8"))
    return ApiServer(
        sandboxes, resources=resources_from_openapi(document), claims=claims, port=port
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the user-service API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--moto-port", type=int, default=0, help="default: any free port")
    parser.add_argument(
        "--origin", action="append", help=f"allowed CORS origin (default: {DEFAULT_ORIGINS[0]})"
    )
    parser.add_argument("--sub", default=local_claims()["sub"], help="stand-in caller's sub")
    parser.add_argument("--email", default=local_claims()["email"], help="stand-in caller")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="sandboxes serving requests in parallel (default 1: in this process)",
    )
    args = parser.parse_args(argv)
    # Ctrl-C (and a plain kill) stop it, even when started from a shell that runs background
    # jobs with SIGINT ignored, which the child would otherwise inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    emulator = Emulator(port=args.moto_port).start()
    try:
        os.environ.update(emulator.environment())
        os.environ.pop("AWS_PROFILE", None)
        resources = create_resources(
            emulator.client, allowed_origins=args.origin or DEFAULT_ORIGINS
        )
        os.environ.update(resources.environment())
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "user-api-local")
        try:
            server = api_server(
                port=args.port,
                claims=local_claims(sub=args.sub, email=args.email),
                concurrency=args.concurrency,
            )
        except OSError as error:
            print(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}", file=sys.stderr)
            return 1
        print(
            f"user-service API on {server.url} (AWS emulated at {emulator.endpoint_url})\n"
            f"  curl -s -X POST {server.url}/users -H 'Authorization: Bearer local' "
            """-d '{"email": "ada@example.com", "name": "Ada Lovelace"}'\n"""
            f"  curl -s {server.url}/users -H 'Authorization: Bearer local'\n"
            f"user_created events go to {resources.events_queue_url}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
