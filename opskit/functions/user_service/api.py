"""The user service's REST API: one handler for every route of API Gateway (REST, proxy).

Routes: ``GET /users`` (``limit``, ``next_token``, ``email``), ``POST /users``,
``GET|PUT|DELETE /users/{user_id}``; the contract is ``openapi.json`` beside this file.
Every response is JSON with ``X-Request-ID`` and, for an allowed ``Origin``, CORS
headers. Bad input is a 4xx naming the field, never a 500.

Environment: ``USERS_TABLE``, ``USER_CREATED_TOPIC`` (SNS topic ARN),
``ALLOWED_ORIGINS`` (comma-separated origins; ``*`` only outside production),
``PAGE_TOKEN_SECRET_ARN`` (Secrets Manager secret that signs page tokens).

``{"opskit": {"smokeTest": true}}`` (what each deployment's post-traffic hook sends; no proxy
event has that shape) checks the configuration: the environment, the page-token key from its
secret, and a read of the users table; it stores and publishes nothing, and a 500 fails it.

A small router rather than Powertools' APIGatewayRestResolver: importing Powertools'
event handler package compiles it at every cold start (the layer ships no bytecode),
which put the function's init at 1.6-1.8x bare boto3 with a DynamoDB resource, over the
1.5x budget; with this router it measured 1.15-1.35x (``benchmarks/user_api.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import page_tokens
import users
import validation
from aws_lambda_powertools.logging import Logger
from botocore.exceptions import BotoCoreError, ClientError
from opskit_common.clients import client
from opskit_common.config import ConfigurationError, env_list, require_env
from opskit_common.events import is_smoke_test
from opskit_common.secrets import get_secret_string
from opskit_common.startup import imports_done

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "user-api")

EVENT_TYPE = "user_created"
USERS = "/users"
USER = "/users/{user_id}"
_USER_PATH = re.compile(r"^/users/([^/]+)/?$")
_USER_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
    }
)
CORS_ALLOW_HEADERS = "Authorization,Content-Type,X-Request-ID"
CORS_MAX_AGE = "600"
SMOKE_TEST_USER_ID = "00000000-0000-4000-8000-000000000000"
"""A well-formed id no user has (ids are random UUID4s): the smoke test's read."""


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Request:
    method: str
    route: str
    user_id: str | None
    query: dict[str, list[str]]
    body: bytes
    request_id: str


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any] | None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Services:
    """What the routes need, built per request from the environment and cached clients."""

    store: users.UserStore
    sns: Callable[[], Any]
    topic_arn: str
    token_key: Callable[[], bytes]


# --- the routes ------------------------------------------------------------------------


def list_users(request: Request, services: Services) -> Response:
    query = validation.list_query(request.query)
    bound = {"route": "list", "email": query.email}
    start = None
    if query.next_token is not None:
        attributes = ("user_id", "email") if query.email else users.CREATED_INDEX_KEY
        try:
            start = page_tokens.read(
                services.token_key(), query.next_token, query=bound, attributes=attributes
            )
        except page_tokens.InvalidTokenError as error:
            raise HttpError(400, str(error), [_detail("query.next_token", str(error))]) from None
    if query.email is not None:
        page = services.store.find_by_email(query.email, limit=query.limit, start_key=start)
    else:
        page = services.store.list_page(limit=query.limit, start_key=start)
    body: dict[str, Any] = {
        "users": [user.as_json() for user in page.users],
        "count": len(page.users),
    }
    if page.next_key is not None:
        body["next_token"] = page_tokens.issue(
            services.token_key(), query=bound, position=page.next_key
        )
    return Response(200, body)


def create_user(request: Request, services: Services) -> Response:
    validation.no_query(request.query)
    email, name = validation.create_body(validation.parse_object(request.body))
    try:
        user = services.store.create(email=email, name=name)
    except users.EmailTakenError:
        raise HttpError(409, "email is already in use", [_detail("email", "taken")]) from None
    publish_user_created(user, sns=services.sns(), topic_arn=services.topic_arn)
    return Response(201, {"user": user.as_json()})


def get_user(request: Request, services: Services) -> Response:
    validation.no_query(request.query)
    user = services.store.get(_user_id(request))
    if user is None:
        raise _not_found()
    return Response(200, {"user": user.as_json()})


def update_user(request: Request, services: Services) -> Response:
    validation.no_query(request.query)
    email, name = validation.update_body(validation.parse_object(request.body))
    try:
        user = services.store.update(_user_id(request), name=name, email=email)
    except users.UserNotFoundError:
        raise _not_found() from None
    except users.EmailTakenError:
        raise HttpError(409, "email is already in use", [_detail("email", "taken")]) from None
    return Response(200, {"user": user.as_json()})


def delete_user(request: Request, services: Services) -> Response:
    validation.no_query(request.query)
    try:
        services.store.delete(_user_id(request))
    except users.UserNotFoundError:
        raise _not_found() from None
    return Response(204, None)


ROUTES: dict[str, dict[str, Callable[[Request, Services], Response]]] = {
    USERS: {"GET": list_users, "POST": create_user},
    USER: {"GET": get_user, "PUT": update_user, "DELETE": delete_user},
}


def publish_user_created(user: users.User, *, sns: Any, topic_arn: str) -> None:
    """The user-created event; filtered on by subscribers through ``event_type``.

    The user is already stored when this runs, so a failure is logged (with the user id
    only) and the caller still gets its 201: a retried create would only meet a 409.
    """
    try:
        sns.publish(
            TopicArn=topic_arn,
            Message=json.dumps({"event_type": EVENT_TYPE, "user": user.as_json()}),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": EVENT_TYPE}},
        )
    except (ClientError, BotoCoreError) as error:
        logger.error(
            "user_created event not published",
            extra={"user_id": user.user_id, "error": type(error).__name__},
        )


# --- HTTP plumbing ---------------------------------------------------------------------


def _detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _not_found() -> HttpError:
    return HttpError(404, "user not found")


def _not_proxy_event(field: str, expected: str) -> HttpError:
    """A field API Gateway never sends in this shape: the integration is broken, not the call."""
    return HttpError(
        400, "event is not an API Gateway proxy event", [_detail(field, f"expected {expected}")]
    )


def _user_id(request: Request) -> str:
    """The path's user id; anything but a user id we issued cannot name a user."""
    if request.user_id is None or not _USER_ID.match(request.user_id):
        raise _not_found()
    return request.user_id


def _lower_keys(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items() if v is not None}


def _route(event: Mapping[str, Any]) -> tuple[str, str | None]:
    """(resource, user_id) from API Gateway's resource, or from the path behind a proxy."""
    resource = event.get("resource")
    parameters = event.get("pathParameters") or {}
    if resource == USERS:
        return USERS, None
    if resource == USER:
        if not isinstance(parameters, Mapping):
            raise _not_proxy_event("pathParameters", "an object")
        return USER, str(parameters.get("user_id") or "")
    path = str(event.get("path") or "")
    if path.rstrip("/") == USERS:
        return USERS, None
    match = _USER_PATH.match(path)
    if match:
        return USER, match.group(1)
    raise HttpError(404, "no such resource")


def _query(event: Mapping[str, Any]) -> dict[str, list[str]]:
    multi = event.get("multiValueQueryStringParameters")
    if isinstance(multi, Mapping):
        for k, vs in multi.items():
            if vs is not None and not isinstance(vs, list):
                raise _not_proxy_event(f"multiValueQueryStringParameters.{str(k)[:40]}", "a list")
        return {str(k): [str(v) for v in (vs or [])] for k, vs in multi.items()}
    single = event.get("queryStringParameters")
    if isinstance(single, Mapping):
        return {str(k): [str(v)] for k, v in single.items()}
    return {}


def _body(event: Mapping[str, Any]) -> bytes:
    raw = event.get("body")
    if raw is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(str(raw), validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, "body is not valid base64") from None
    return str(raw).encode("utf-8", "surrogatepass")


def _claims(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    claims = authorizer.get("claims") if isinstance(authorizer, Mapping) else None
    if isinstance(claims, Mapping) and claims.get("sub"):
        return claims
    return None


def request_id_of(event: Any, context: Any) -> str:
    """API Gateway's request id; Lambda's without one; a new one without either."""
    request_context = event.get("requestContext") if isinstance(event, Mapping) else None
    for candidate in (
        request_context.get("requestId") if isinstance(request_context, Mapping) else None,
        getattr(context, "aws_request_id", None),
    ):
        if isinstance(candidate, str) and _REQUEST_ID.match(candidate):
            return candidate
    return str(uuid.uuid4())


def cors_headers(origin: str | None, allowed: tuple[str, ...]) -> dict[str, str]:
    headers = {"Vary": "Origin"}
    if "*" in allowed:
        headers["Access-Control-Allow-Origin"] = "*"
    elif origin and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
    else:
        return headers
    headers["Access-Control-Expose-Headers"] = "X-Request-ID"
    return headers


def render(
    response: Response, *, request_id: str, origin: str | None, allowed: tuple[str, ...]
) -> dict[str, Any]:
    headers = {
        "Content-Type": "application/json",
        "X-Request-ID": request_id,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        **cors_headers(origin, allowed),
        **(response.headers or {}),
    }
    body = "" if response.body is None else json.dumps({**response.body, "request_id": request_id})
    return {"statusCode": response.status, "headers": headers, "body": body}


def _error(error: HttpError) -> Response:
    return Response(error.status, {"error": error.message, "details": error.details}, error.headers)


def services_from_environment() -> Services:
    secret_arn = require_env("PAGE_TOKEN_SECRET_ARN")
    return Services(
        store=users.UserStore(table_name=require_env("USERS_TABLE"), dynamodb=client("dynamodb")),
        sns=lambda: client("sns"),
        topic_arn=require_env("USER_CREATED_TOPIC"),
        token_key=lambda: _token_key(secret_arn),
    )


def _token_key(secret_arn: str) -> bytes:
    try:
        return page_tokens.derive_key(get_secret_string(secret_arn))
    except page_tokens.WeakSecretError as error:
        raise ConfigurationError(f"secret {secret_arn}: {error}") from None


def smoke_test(services: Services) -> Response:
    """The configuration works: the page-token key can be read and the table answers."""
    services.token_key()
    services.store.get(SMOKE_TEST_USER_ID)
    return Response(200, {"smokeTest": "passed"})


def handle(event: Any, request_id: str) -> Response:
    """The response to one proxy event; raises only for faults of ours or of AWS."""
    if not isinstance(event, Mapping):
        raise HttpError(400, "event is not an API Gateway proxy event")
    if is_smoke_test(event):
        return smoke_test(services_from_environment())
    route, user_id = _route(event)
    method = str(event.get("httpMethod") or "").upper()
    if method == "OPTIONS":
        return Response(
            204,
            None,
            {
                "Access-Control-Allow-Methods": ",".join([*ROUTES[route], "OPTIONS"]),
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
            },
        )
    action = ROUTES[route].get(method)
    if action is None:
        raise HttpError(
            405,
            f"method {method[:10]} is not allowed here",
            headers={"Allow": ",".join(ROUTES[route])},
        )
    if _claims(event) is None:
        raise HttpError(401, "unauthorized")
    body = _body(event)
    if len(body) > validation.MAX_BODY_BYTES:
        raise HttpError(
            413,
            "request body is too large",
            [_detail("body", f"{len(body)} bytes; the limit is {validation.MAX_BODY_BYTES}")],
        )
    request = Request(method, route, user_id, _query(event), body, request_id)
    try:
        return action(request, services_from_environment())
    except validation.ValidationError as error:
        raise HttpError(400, str(error), [p.as_json() for p in error.problems]) from None


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    request_id = request_id_of(event, context)
    headers = _lower_keys(event.get("headers")) if isinstance(event, Mapping) else {}
    allowed = env_list("ALLOWED_ORIGINS")
    try:
        response = handle(event, request_id)
    except HttpError as error:
        response = _error(error)
    except users.ContentionError:
        response = _error(HttpError(503, "busy, try again", headers={"Retry-After": "1"}))
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code"))
        if code not in _THROTTLED:
            logger.exception("AWS call failed", extra={"request_id": request_id, "code": code})
            response = _error(HttpError(500, "internal error"))
        else:
            logger.warning("AWS throttled us", extra={"request_id": request_id, "code": code})
            response = _error(HttpError(503, "busy, try again", headers={"Retry-After": "1"}))
    except ConfigurationError as error:
        logger.error("misconfigured", extra={"request_id": request_id, "error": str(error)})
        response = _error(HttpError(500, "internal error"))
    except Exception:
        logger.exception("unhandled error", extra={"request_id": request_id})
        response = _error(HttpError(500, "internal error"))
    logger.info(
        "request",
        extra={
            "request_id": request_id,
            "method": event.get("httpMethod") if isinstance(event, Mapping) else None,
            "resource": event.get("resource") if isinstance(event, Mapping) else None,
            "status": response.status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
    return render(response, request_id=request_id, origin=headers.get("origin"), allowed=allowed)


imports_done()
