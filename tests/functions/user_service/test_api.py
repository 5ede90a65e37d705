"""Specification of the user-service REST API (opskit/functions/user_service/api.py).

Every request goes over HTTP to the API Gateway adapter that `make api` uses, which
calls `lambda_handler` with a REST proxy event; the handler talks to moto's server
(DynamoDB, SNS, Secrets Manager) through AWS_ENDPOINT_URL. Nothing is mocked in between.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.stub import Stubber

from opskit_local.api_gateway import proxy_event
from opskit_local.functions import load_function
from opskit_local.user_service import UserServiceResources
from tests.functions.user_service.conftest import ORIGIN, Api, drain

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "details", "request_id"}
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def fields_of(response: Any) -> dict[str, str]:
    return {detail["field"]: detail["message"] for detail in error_of(response)["details"]}


# --- POST /users ------------------------------------------------------------------------


def test_create_returns_201_with_the_stored_user_and_publishes_the_event(
    api: Api, aws: Any, resources: UserServiceResources
) -> None:
    # GIVEN an empty service, no events waiting
    drain(aws, resources)

    # WHEN a user is created with a mixed-case address and a padded name
    response = api.http.post(
        f"{api.url}/users", json={"email": "Ada.Lovelace@Example.COM", "name": "  Ada Lovelace "}
    )

    # THEN 201: the address in lower case, the name stripped, server-made id and times
    assert response.status_code == 201
    body = response.json()
    user = body["user"]
    assert set(body) == {"user", "request_id"}
    assert user["email"] == "ada.lovelace@example.com"
    assert user["name"] == "Ada Lovelace"
    assert UUID.match(user["user_id"])
    assert TIMESTAMP.match(user["created_at"]) and user["updated_at"] == user["created_at"]
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Request-ID"] == body["request_id"]
    # AND it can be read back
    read = api.get(f"/users/{user['user_id']}")
    assert (read.status_code, read.json()["user"]) == (200, user)
    # AND exactly one user_created event went out, with the attribute subscribers filter on
    [envelope] = drain(aws, resources)
    assert json.loads(envelope["Message"]) == {"event_type": "user_created", "user": user}
    assert envelope["MessageAttributes"]["event_type"] == {
        "Type": "String",
        "Value": "user_created",
    }


def test_create_with_an_address_in_use_in_any_case_is_409_and_publishes_nothing(
    api: Api, aws: Any, resources: UserServiceResources
) -> None:
    # GIVEN a user with ada@example.com
    ada = api.create("ada@example.com").json()["user"]
    drain(aws, resources)

    # WHEN another create uses the same address in other case
    response = api.create("ADA@example.com", "Someone Else")

    # THEN 409 naming the field, and no event
    assert response.status_code == 409
    assert error_of(response)["error"] == "email is already in use"
    assert fields_of(response) == {"email": "taken"}
    assert drain(aws, resources) == []
    # AND nothing of the refused create was kept
    assert api.get("/users").json()["users"] == [ada]


CREATE_BODIES_AND_PROBLEMS: list[tuple[Any, dict[str, str]]] = [
    ({"email": "a@example.com"}, {"name": "missing"}),
    ({"name": "A"}, {"email": "missing"}),
    ({}, {"email": "missing", "name": "missing"}),
    ({"email": "a@example.com", "name": "A", "role": "admin"}, {"role": "unknown field"}),
    ({"email": 5, "name": "A"}, {"email": "expected string, got number"}),
    ({"email": "a@example.com", "name": None}, {"name": "expected string, got null"}),
    ({"email": "a@example.com", "name": True}, {"name": "expected string, got boolean"}),
    ({"email": ["a@example.com"], "name": "A"}, {"email": "expected string, got array"}),
    ({"email": "a@example.com", "name": {"first": "A"}}, {"name": "expected string, got object"}),
    ({"email": "a@example.com", "name": ""}, {"name": "empty"}),
    ({"email": "a@example.com", "name": " \t "}, {"name": "empty"}),
    ({"email": "a@example.com", "name": "x" * 101}, {"name": "longer than 100 characters"}),
    (
        {"email": "a@example.com", "name": "Ada\nLovelace"},
        {"name": "contains control or unpaired surrogate characters"},
    ),
    ({"email": "not-an-address", "name": "A"}, {"email": "not a valid e-mail address"}),
]


def test_create_refuses_a_body_that_breaks_a_rule_with_400_naming_each_field(api: Api) -> None:
    for body, problems in CREATE_BODIES_AND_PROBLEMS:
        # WHEN a create body breaks the rules
        response = api.http.post(f"{api.url}/users", json=body)

        # THEN 400, every problem named with its field
        assert response.status_code == 400, body
        assert fields_of(response) == problems, body
    assert api.get("/users").json()["count"] == 0


LONGEST_ADDRESS = "a" * 64 + "@" + ".".join(["b" * 60, "c" * 60, "d" * 63, "com"])
"""254 characters, with a local part of 64: the longest address there is."""

INVALID_ADDRESSES = [
    "plain",
    "@example.com",
    "a@",
    "a@example",
    "a@example.c",
    "a b@example.com",
    " a@example.com",
    "a@example.com ",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@-example.com",
    "a@example-.com",
    "a@exa_mple.com",
    "a@@example.com",
    '"a"@example.com',
    "ädä@example.com",
    "a@exämple.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 250 + ".com",
    LONGEST_ADDRESS.replace("@b", "@bb", 1),
]
VALID_ADDRESSES = [
    "a@b.co",
    "first.last+tag@sub.example.org",
    "o'brien@example.ie",
    "x@example.xn--p1ai",
    "A@B.CD",
    "a" * 64 + "@example.com",
    LONGEST_ADDRESS,
]


def test_invalid_addresses_are_400_and_valid_ones_are_stored_in_lower_case(api: Api) -> None:
    refused = {address: api.create(address) for address in INVALID_ADDRESSES}
    accepted = {address: api.create(address) for address in VALID_ADDRESSES}

    assert {a: r.status_code for a, r in refused.items()} == dict.fromkeys(INVALID_ADDRESSES, 400)
    assert all("email" in fields_of(response) for response in refused.values())
    assert {a: r.status_code for a, r in accepted.items()} == dict.fromkeys(VALID_ADDRESSES, 201)
    assert [r.json()["user"]["email"] for r in accepted.values()] == [
        address.lower() for address in VALID_ADDRESSES
    ]


RAW_BODIES_AND_PROBLEMS: list[tuple[bytes, str | tuple[str, ...]]] = [
    (b'{"email": "a@example.com", "name": "A"', "malformed JSON"),
    (b"", "malformed JSON"),
    (b"[]", "expected object, got array"),
    (b'"text"', "expected object, got string"),
    (b'{"email": "a@example.com", "name": NaN}', "NaN is not JSON"),
    (
        b'{"email": "a@example.com", "email": "b@example.com", "name": "A"}',
        "key 'email' appears twice",
    ),
    (b"\xff\xfe{}", "not UTF-8"),
    # Python 3.11 cannot parse this deep; 3.12 and later can, and then it is an array
    (b"[" * 5000 + b"]" * 5000, ("nested too deeply", "expected object, got array")),
]


def test_a_body_that_is_not_a_json_object_is_400(api: Api) -> None:
    for raw, problem in RAW_BODIES_AND_PROBLEMS:
        response = api.http.post(
            f"{api.url}/users", data=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, raw[:50]
        assert fields_of(response)["body"] in (
            problem if isinstance(problem, tuple) else (problem,)
        )


def test_a_name_of_100_characters_is_the_longest_accepted(api: Api) -> None:
    response = api.create("a@example.com", name="x" * 100)

    assert response.status_code == 201
    assert response.json()["user"]["name"] == "x" * 100


def test_a_lone_surrogate_in_a_name_is_400_not_a_500(api: Api) -> None:
    raw = b'{"email": "a@example.com", "name": "Ada \\ud800"}'
    response = api.http.post(f"{api.url}/users", data=raw)
    assert response.status_code == 400
    assert fields_of(response) == {"name": "contains control or unpaired surrogate characters"}


def test_a_body_over_10_kb_is_413_and_one_of_exactly_10_kb_is_read(api: Api) -> None:
    # GIVEN bodies padded with JSON whitespace to exactly 10,240 and 10,241 bytes
    core = b'{"email": "ten@example.com", "name": "Ten"}'
    at_limit = core + b" " * (10 * 1024 - len(core))

    # WHEN both are posted
    over = api.http.post(f"{api.url}/users", data=at_limit + b" ")
    at = api.http.post(f"{api.url}/users", data=at_limit)

    # THEN the larger is refused for its size, the other is a normal create
    assert over.status_code == 413
    assert fields_of(over) == {"body": "10241 bytes; the limit is 10240"}
    assert at.status_code == 201


def test_query_parameters_on_a_create_are_400(api: Api) -> None:
    response = api.http.post(
        f"{api.url}/users", params={"dry": "1"}, json={"email": "a@example.com", "name": "A"}
    )
    assert response.status_code == 400
    assert fields_of(response) == {"query.dry": "unknown parameter"}


# --- GET /users/{user_id} ---------------------------------------------------------------


def test_get_of_an_unknown_id_is_404_and_guard_items_are_never_users(api: Api) -> None:
    # GIVEN ada@example.com exists (so its guard item "EMAIL#ada@example.com" exists too)
    ada = api.create("ada@example.com").json()["user"]["user_id"]

    for user_id in (str(uuid.uuid4()), "not-a-uuid", "EMAIL%23ada%40example.com", ada.upper()):
        # WHEN an id that names no user is read
        response = api.get(f"/users/{user_id}")

        # THEN 404
        assert response.status_code == 404, user_id
        assert error_of(response) == {
            "error": "user not found",
            "details": [],
            "request_id": response.headers["X-Request-ID"],
        }


# --- PUT /users/{user_id} ---------------------------------------------------------------


def test_renaming_keeps_id_address_and_creation_time(api: Api) -> None:
    user = api.create("ada@example.com", "Ada").json()["user"]

    response = api.http.put(f"{api.url}/users/{user['user_id']}", json={"name": "Countess"})

    assert response.status_code == 200
    changed = response.json()["user"]
    assert changed == {**user, "name": "Countess", "updated_at": changed["updated_at"]}
    assert changed["updated_at"] > user["updated_at"]
    assert api.get(f"/users/{user['user_id']}").json()["user"] == changed


def test_changing_the_address_moves_uniqueness_with_it(api: Api) -> None:
    # GIVEN ada@ and grace@
    ada = api.create("ada@example.com", "Ada").json()["user"]
    assert api.create("grace@example.com", "Grace").status_code == 201

    # WHEN ada moves to countess@ (given in upper case)
    moved = api.http.put(
        f"{api.url}/users/{ada['user_id']}", json={"email": "COUNTESS@example.com"}
    )

    # THEN 200 with the new address, found by it and not by the old one
    assert moved.status_code == 200
    assert moved.json()["user"]["email"] == "countess@example.com"
    assert api.get("/users", email="countess@example.com").json()["count"] == 1
    assert api.get("/users", email="ada@example.com").json()["count"] == 0
    # AND the old address is free again, the new one taken
    assert api.create("ada@example.com", "Another Ada").status_code == 201
    assert api.create("countess@example.com").status_code == 409


def test_taking_another_users_address_is_409_and_changes_nothing(api: Api) -> None:
    ada = api.create("ada@example.com", "Ada").json()["user"]
    assert api.create("grace@example.com", "Grace").status_code == 201

    response = api.http.put(
        f"{api.url}/users/{ada['user_id']}", json={"email": "Grace@example.com", "name": "X"}
    )

    assert response.status_code == 409
    assert fields_of(response) == {"email": "taken"}
    assert api.get(f"/users/{ada['user_id']}").json()["user"] == ada
    assert api.create("ada@example.com").status_code == 409  # still ada's


def test_putting_the_same_address_in_other_case_is_a_rename_only(api: Api) -> None:
    ada = api.create("ada@example.com", "Ada").json()["user"]

    response = api.http.put(
        f"{api.url}/users/{ada['user_id']}", json={"email": "ADA@EXAMPLE.COM", "name": "Ada L"}
    )

    assert response.status_code == 200
    assert response.json()["user"]["email"] == "ada@example.com"
    assert api.create("ada@example.com").status_code == 409


def test_updating_an_absent_user_is_404_and_creates_nothing(api: Api) -> None:
    user_id = str(uuid.uuid4())
    for body in ({"name": "Ghost"}, {"email": "ghost@example.com"}):
        response = api.http.put(f"{api.url}/users/{user_id}", json=body)
        assert response.status_code == 404
    assert api.get(f"/users/{user_id}").status_code == 404
    assert api.create("ghost@example.com").status_code == 201  # the address was never taken


UPDATE_BODIES_AND_PROBLEMS: list[tuple[Any, dict[str, str]]] = [
    ({}, {"body": "give name, email or both"}),
    ({"user_id": "x"}, {"user_id": "unknown field"}),
    ({"name": ""}, {"name": "empty"}),
    ({"email": "nope"}, {"email": "not a valid e-mail address"}),
    ({"email": None}, {"email": "expected string, got null"}),
]


def test_update_refuses_a_bad_body_with_400_and_changes_nothing(api: Api) -> None:
    ada = api.create("ada@example.com", "Ada").json()["user"]
    for body, problems in UPDATE_BODIES_AND_PROBLEMS:
        response = api.http.put(f"{api.url}/users/{ada['user_id']}", json=body)
        assert response.status_code == 400, body
        assert fields_of(response) == problems, body
    assert api.get(f"/users/{ada['user_id']}").json()["user"] == ada


# --- DELETE /users/{user_id} ------------------------------------------------------------


def test_delete_is_204_frees_the_address_and_a_second_delete_is_404(api: Api) -> None:
    ada = api.create("ada@example.com", "Ada").json()["user"]

    deleted = api.http.delete(f"{api.url}/users/{ada['user_id']}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert deleted.headers["Content-Type"] == "application/json"
    assert deleted.headers["X-Request-ID"]
    assert api.get(f"/users/{ada['user_id']}").status_code == 404
    assert api.http.delete(f"{api.url}/users/{ada['user_id']}").status_code == 404
    assert api.create("ada@example.com", "New Ada").status_code == 201


def test_update_and_delete_of_ids_that_name_no_user_are_404_and_change_nothing(
    api: Api,
) -> None:
    """Only an id the service issued reaches the table: a guard item's key is not a user."""
    ada = api.create("ada@example.com", "Ada").json()["user"]

    for user_id in ("not-a-uuid", "EMAIL%23ada%40example.com", ada["user_id"].upper()):
        renamed = api.http.put(f"{api.url}/users/{user_id}", json={"name": "Mallory"})
        deleted = api.http.delete(f"{api.url}/users/{user_id}")

        assert (renamed.status_code, deleted.status_code) == (404, 404), user_id
        assert error_of(deleted)["error"] == "user not found"
    assert api.get(f"/users/{ada['user_id']}").json()["user"] == ada
    assert api.create("ada@example.com").status_code == 409


# --- GET /users ---------------------------------------------------------------------------


def test_120_users_in_pages_of_50_come_back_exactly_once(api: Api, store: Any) -> None:
    # GIVEN 120 users (stored through the data model the API uses: quicker than 120 POSTs)
    created = {store.create(email=f"user{i:03}@example.com", name="U").user_id for i in range(120)}
    assert len(created) == 120

    # WHEN listed with the default limit, following next_token
    pages = [api.get("/users").json()]
    while "next_token" in pages[-1]:
        pages.append(api.get("/users", next_token=pages[-1]["next_token"]).json())

    # THEN pages of 50, 50, 20, the last without a token, every user exactly once
    assert [page["count"] for page in pages] == [50, 50, 20]
    assert all(page["count"] == len(page["users"]) for page in pages)
    listed = [user["user_id"] for page in pages for user in page["users"]]
    assert len(listed) == len(set(listed)) == 120
    assert set(listed) == created


def test_a_listing_that_ends_on_a_full_page_has_no_token_on_it(api: Api) -> None:
    for i in range(4):
        api.create(f"user{i}@example.com")

    first = api.get("/users", limit=2).json()
    second = api.get("/users", limit=2, next_token=first["next_token"]).json()

    assert first["count"] == second["count"] == 2
    assert "next_token" not in second


def test_an_empty_listing(api: Api) -> None:
    body = api.get("/users").json()
    assert (body["users"], body["count"], "next_token" in body) == ([], 0, False)


def test_the_email_filter_is_exact_and_case_insensitive(api: Api) -> None:
    ada = api.create("ada@example.com", "Ada").json()["user"]
    api.create("ada@example.co")
    api.create("xada@example.com")
    api.create("ada+tag@example.com")

    found = api.get("/users", email="ADA@Example.com").json()
    tagged = api.get("/users", email="ada+tag@example.com").json()
    missing = api.get("/users", email="nobody@example.com").json()

    assert found["users"] == [ada]
    assert found["count"] == 1 and "next_token" not in found
    assert [user["email"] for user in tagged["users"]] == ["ada+tag@example.com"]
    assert missing["users"] == [] and missing["count"] == 0


QUERIES_AND_PROBLEMS: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"limit": "0"}, {"query.limit": "must be a whole number from 1 to 100"}),
    ({"limit": "101"}, {"query.limit": "must be a whole number from 1 to 100"}),
    ({"limit": "ten"}, {"query.limit": "must be a whole number from 1 to 100"}),
    ({"limit": "1.5"}, {"query.limit": "must be a whole number from 1 to 100"}),
    ({"limit": "-1"}, {"query.limit": "must be a whole number from 1 to 100"}),
    ({"limit": ["1", "2"]}, {"query.limit": "given more than once"}),
    ({"next_token": ""}, {"query.next_token": "empty"}),
    ({"email": "nope"}, {"query.email": "not a valid e-mail address"}),
    ({"page": "2"}, {"query.page": "unknown parameter"}),
]


def test_bad_query_parameters_are_400(api: Api) -> None:
    for params, problems in QUERIES_AND_PROBLEMS:
        response = api.http.get(f"{api.url}/users", params=params)
        assert response.status_code == 400, params
        assert fields_of(response) == problems, params


def test_limit_bounds_are_accepted(api: Api) -> None:
    for i in range(3):
        api.create(f"user{i}@example.com")
    assert api.get("/users", limit="1").json()["count"] == 1
    assert api.get("/users", limit="100").json()["count"] == 3


def _tamper(token: str, position: int) -> str:
    flipped = "A" if token[position] != "A" else "B"
    return token[:position] + flipped + token[position + 1 :]


def test_an_altered_or_forged_next_token_is_400(api: Api) -> None:
    # GIVEN a valid token
    for i in range(3):
        api.create(f"user{i}@example.com")
    token = api.get("/users", limit=1).json()["next_token"]
    payload, signature = token.split(".")
    position = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    # AND forgeries: a changed byte in the payload or the signature, a re-encoded payload
    # pointing elsewhere with the old signature, garbage, and an oversized token
    moved = dict(position, k={**position["k"], "user_id": str(uuid.uuid4())})
    reencoded = base64.urlsafe_b64encode(json.dumps(moved).encode()).rstrip(b"=").decode()
    forgeries = {
        _tamper(token, 5): "next_token was not issued by this service or was altered",
        _tamper(token, len(token) - 3): "next_token was not issued by this service or was altered",
        f"{reencoded}.{signature}": "next_token was not issued by this service or was altered",
        "garbage": "next_token is malformed",
        token + "x" * 2000: "next_token is malformed",
    }

    for forged, message in forgeries.items():
        # WHEN used  THEN 400 with the reason
        response = api.get("/users", next_token=forged)
        assert response.status_code == 400, forged
        assert fields_of(response) == {"query.next_token": message}


def test_a_token_from_another_query_is_400(api: Api) -> None:
    # GIVEN a token from the unfiltered listing
    for i in range(3):
        api.create(f"user{i}@example.com")
    token = api.get("/users", limit=1).json()["next_token"]

    # WHEN it is presented with an e-mail filter
    response = api.get("/users", email="user0@example.com", next_token=token)

    # THEN 400: a page token only continues the query that issued it
    assert response.status_code == 400
    assert fields_of(response) == {"query.next_token": "next_token belongs to a different query"}
    # AND it still works where it belongs, with any limit
    assert api.get("/users", next_token=token, limit=5).json()["count"] == 2


def test_a_token_signed_with_another_deployments_key_is_400(
    api: Api, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a token issued by this deployment
    for i in range(3):
        api.create(f"user{i}@example.com")
    token = api.get("/users", limit=1).json()["next_token"]

    # WHEN the service signs with another secret (another deployment, or a rotated key)
    other = aws("secretsmanager").create_secret(
        Name=f"other-{uuid.uuid4().hex}", SecretString="k" * 48
    )["ARN"]
    monkeypatch.setenv("PAGE_TOKEN_SECRET_ARN", other)

    # THEN the old token is refused
    response = api.get("/users", next_token=token)
    assert response.status_code == 400
    assert "not issued by this service" in fields_of(response)["query.next_token"]


# --- HTTP behaviour common to every route -------------------------------------------------


def test_cors_headers_go_to_allowed_origins_only(api: Api) -> None:
    allowed = api.http.get(f"{api.url}/users", headers={"Origin": ORIGIN})
    other = api.http.get(f"{api.url}/users", headers={"Origin": "https://evil.example"})
    missing = api.http.get(f"{api.url}/users/{uuid.uuid4()}", headers={"Origin": ORIGIN})

    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
    assert allowed.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in other.headers
    assert other.headers["Vary"] == "Origin"
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_a_preflight_is_answered_for_the_resource(api: Api) -> None:
    response = api.http.options(
        f"{api.url}/users/{uuid.uuid4()}",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"},
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Methods"] == "GET,PUT,DELETE,OPTIONS"
    assert (
        response.headers["Access-Control-Allow-Headers"]
        == "Authorization,Content-Type,X-Request-ID"
    )


def test_unknown_paths_are_404_and_other_methods_405(api: Api) -> None:
    unknown = api.http.get(f"{api.url}/accounts")
    patch = api.http.patch(f"{api.url}/users", json={})

    assert unknown.status_code == 404
    assert error_of(unknown)["error"] == "no such resource"
    assert patch.status_code == 405
    assert patch.headers["Allow"] == "GET,POST"


def test_a_405_names_at_most_10_characters_of_the_method(
    resources: UserServiceResources,
) -> None:
    """The method is the caller's text: the error message echoes only its first 10 characters."""
    handler = load_function("user_service", "api").lambda_handler

    response = handler(caller_event("VERYLONGMETHODNAME", f"/users/{uuid.uuid4()}"), None)

    assert response["statusCode"] == 405
    assert json.loads(response["body"])["error"] == "method VERYLONGME is not allowed here"
    assert response["headers"]["Allow"] == "GET,PUT,DELETE"


def test_without_authorizer_claims_every_route_is_401(resources: UserServiceResources) -> None:
    # GIVEN an event that did not pass API Gateway's Cognito authorizer
    handler = load_function("user_service", "api").lambda_handler
    for method, path in (("GET", "/users"), ("POST", "/users"), ("DELETE", "/users/x")):
        event = proxy_event(
            method=method,
            target=path,
            headers=[],
            body=b"",
            resources=[],
            claims=None,
        )
        # WHEN handled  THEN 401, in the error format
        response = handler(event, None)
        assert response["statusCode"] == 401
        assert json.loads(response["body"])["error"] == "unauthorized"


def test_the_deployment_smoke_test_reads_the_key_and_the_table_and_changes_nothing(
    resources: UserServiceResources, aws: Any, store: Any
) -> None:
    # GIVEN a configured function with an empty table and no events waiting
    handler = load_function("user_service", "api").lambda_handler
    drain(aws, resources)

    # WHEN the post-traffic hook sends its smoke test
    response = handler({"opskit": {"smokeTest": True}}, None)

    # THEN it passes, in the API's format, and nothing was stored or published
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["smokeTest"] == "passed"
    assert aws("dynamodb").scan(TableName=resources.table_name)["Count"] == 0
    assert drain(aws, resources) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("USERS_TABLE", "no-such-table"),
        ("PAGE_TOKEN_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:none"),
        ("USER_CREATED_TOPIC", None),
    ],
)
def test_the_smoke_test_fails_with_a_500_on_a_configuration_fault(
    resources: UserServiceResources, monkeypatch: pytest.MonkeyPatch, variable: str, value: Any
) -> None:
    # GIVEN one part of the configuration is wrong or missing
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)

    # WHEN smoke-tested  THEN a 500, which the hook reports as a failed deployment
    response = load_function("user_service", "api").lambda_handler(
        {"opskit": {"smokeTest": True}}, None
    )
    assert response["statusCode"] == 500


@pytest.mark.parametrize("event", [[], "GET /users", None], ids=["list", "string", "null"])
def test_an_event_that_is_not_a_proxy_event_is_400_with_the_error_format(
    resources: UserServiceResources, event: Any
) -> None:
    response = load_function("user_service", "api").lambda_handler(event, None)

    assert response["statusCode"] == 400
    body = json.loads(response["body"])
    assert body["error"] == "event is not an API Gateway proxy event"
    assert body["request_id"] == response["headers"]["X-Request-ID"]


def log_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """What the handler logged, with the structured keys Powertools adds to each line."""
    skip = {"args", "msg", "exc_info", "exc_text", "stack_info"}
    return [
        {**{k: v for k, v in vars(r).items() if k not in skip}, "message": r.getMessage()}
        for r in caplog.records
        if r.name == "user-api"
    ]


def test_a_missing_table_is_a_500_with_the_error_format_and_a_log_line(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the function points at a table that does not exist (a deployment fault)
    monkeypatch.setenv("USERS_TABLE", "no-such-table")

    # WHEN a user is read
    response = api.get(f"/users/{uuid.uuid4()}")

    # THEN 500 in the error format, nothing internal in it, and the cause in the log
    assert response.status_code == 500
    assert error_of(response)["error"] == "internal error"
    assert "ResourceNotFound" not in response.text
    [failure] = [r for r in log_records(caplog) if r["message"] == "AWS call failed"]
    assert failure["code"] == "ResourceNotFoundException"
    assert failure["request_id"] == response.headers["X-Request-ID"]


def caller_event(method: str, target: str) -> dict[str, Any]:
    """A proxy event without a body from a signed-in caller, as API Gateway sends it."""
    return proxy_event(
        method=method, target=target, headers=[], body=b"", resources=[], claims={"sub": "caller"}
    )


def test_a_base64_encoded_body_is_decoded_and_one_that_is_not_base64_is_400(
    resources: UserServiceResources,
) -> None:
    """API Gateway base64-encodes bodies of binary media types (isBase64Encoded)."""
    handler = load_function("user_service", "api").lambda_handler
    user = json.dumps({"email": "ada@example.com", "name": "Ada"}).encode()
    encoded = {**caller_event("POST", "/users"), "isBase64Encoded": True}

    created = handler({**encoded, "body": base64.b64encode(user).decode()}, None)
    refused = handler({**encoded, "body": "eyJuYW1l*IjoiQSJ9"}, None)

    assert created["statusCode"] == 201
    assert json.loads(created["body"])["user"]["email"] == "ada@example.com"
    assert refused["statusCode"] == 400
    assert json.loads(refused["body"])["error"] == "body is not valid base64"


def test_a_user_route_without_a_user_id_is_404_for_every_method(
    resources: UserServiceResources,
) -> None:
    """An id that is no id of ours is refused before the table is asked (an empty key is a
    DynamoDB ValidationException, which would be a 500)."""
    handler = load_function("user_service", "api").lambda_handler
    for method in ("GET", "PUT", "DELETE"):
        # GIVEN an event for /users/{user_id} that carries no user_id path parameter
        event = {
            **caller_event(method, "/users/"),
            "resource": "/users/{user_id}",
            "pathParameters": None,
            "body": '{"name": "Ada"}' if method == "PUT" else None,
        }

        # WHEN handled  THEN 404, as for any id that names no user
        response = handler(event, None)
        assert response["statusCode"] == 404, method
        assert json.loads(response["body"])["error"] == "user not found", method


@pytest.mark.parametrize(
    "parameters", ["x", ["x"], 42, True], ids=["string", "list", "int", "bool"]
)
def test_path_parameters_that_are_not_an_object_are_400_naming_them_not_a_500(
    resources: UserServiceResources, parameters: Any
) -> None:
    # GIVEN a /users/{user_id} event whose pathParameters API Gateway would never send
    event = {
        **caller_event("GET", f"/users/{uuid.uuid4()}"),
        "resource": "/users/{user_id}",
        "pathParameters": parameters,
    }

    # WHEN handled
    response = load_function("user_service", "api").lambda_handler(event, None)

    # THEN 400 in the error format, naming the field
    assert response["statusCode"] == 400
    body = json.loads(response["body"])
    assert body["error"] == "event is not an API Gateway proxy event"
    assert body["details"] == [{"field": "pathParameters", "message": "expected an object"}]


@pytest.mark.parametrize(
    "values", ["10", 10, True, {"10": "10"}], ids=["string", "int", "bool", "object"]
)
def test_query_parameter_values_that_are_not_a_list_are_400_naming_the_parameter_not_a_500(
    resources: UserServiceResources, values: Any
) -> None:
    # GIVEN a listing whose multi-value query parameter holds no list of values
    event = {
        **caller_event("GET", "/users"),
        "queryStringParameters": {"limit": "10"},
        "multiValueQueryStringParameters": {"limit": values},
    }

    # WHEN handled
    response = load_function("user_service", "api").lambda_handler(event, None)

    # THEN 400 in the error format, naming the parameter
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["details"] == [
        {"field": "multiValueQueryStringParameters.limit", "message": "expected a list"}
    ]


def test_an_unexpected_fault_is_a_500_with_the_error_format_and_the_trace_in_the_log(
    resources: UserServiceResources,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api_module = load_function("user_service", "api")

    def broken() -> None:
        raise RuntimeError("bug in our code")

    monkeypatch.setattr(api_module, "services_from_environment", broken)

    response = api_module.lambda_handler(caller_event("GET", f"/users/{uuid.uuid4()}"), None)

    assert response["statusCode"] == 500
    body = json.loads(response["body"])
    assert (body["error"], body["request_id"]) == (
        "internal error",
        response["headers"]["X-Request-ID"],
    )
    assert "bug in our code" not in response["body"]
    [line] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert line.levelname == "ERROR"
    assert line.exc_info is not None and str(line.exc_info[1]) == "bug in our code"


def test_a_throttled_table_is_503_with_retry_after(
    resources: UserServiceResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN DynamoDB throttles (after the SDK's own retries)
    api_module = load_function("user_service", "api")
    dynamodb = api_module.client("dynamodb")
    stubber = Stubber(dynamodb)
    stubber.add_client_error(
        "get_item", "ProvisionedThroughputExceededException", http_status_code=400
    )
    stubber.activate()
    real_client = api_module.client
    monkeypatch.setattr(
        api_module, "client", lambda name: dynamodb if name == "dynamodb" else real_client(name)
    )

    # WHEN a user is read  THEN 503 asking to retry
    response = api_module.lambda_handler(caller_event("GET", f"/users/{uuid.uuid4()}"), None)
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == "1"
    assert json.loads(response["body"])["error"] == "busy, try again"
    stubber.assert_no_pending_responses()


def test_an_unpublished_event_is_logged_and_the_create_still_succeeds(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the topic is gone
    monkeypatch.setenv("USER_CREATED_TOPIC", "arn:aws:sns:eu-west-1:123456789012:no-such-topic")

    # WHEN a user is created
    response = api.create("ada@example.com")

    # THEN the user exists (a retry would only meet 409) and the loss is logged by user id
    assert response.status_code == 201
    [line] = [r for r in log_records(caplog) if r["message"] == "user_created event not published"]
    assert line["levelname"] == "ERROR"
    assert line["user_id"] == response.json()["user"]["user_id"]
    assert "ada@example.com" not in json.dumps(line, default=str)


def test_request_logs_carry_no_personal_data(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.create("ada@example.com", "Ada Lovelace")
    api.get("/users", email="ada@example.com")

    records = log_records(caplog)
    assert [r["status"] for r in records if r["message"] == "request"] == [201, 200]
    logged = json.dumps(records, default=str)
    assert "ada@example.com" not in logged and "Lovelace" not in logged


def test_the_request_log_line_gives_the_handling_time_in_milliseconds(
    resources: UserServiceResources,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a monotonic clock that advances 12.3456 ms while the request is handled
    api_module = load_function("user_service", "api")
    readings = iter([100.0, 100.0123456])
    monkeypatch.setattr(api_module, "time", SimpleNamespace(perf_counter=lambda: next(readings)))

    # WHEN a request is handled
    response = api_module.lambda_handler(caller_event("GET", f"/users/{uuid.uuid4()}"), None)

    # THEN its log line gives that time in milliseconds, to the microsecond
    [line] = [r for r in log_records(caplog) if r["message"] == "request"]
    assert (line["status"], line["duration_ms"]) == (response["statusCode"], 12.346)
