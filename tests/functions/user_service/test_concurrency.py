"""Specification: e-mail uniqueness holds under concurrent requests.

Requests are sent from threads released together by a barrier to a local API server
with four sandbox processes, so that concurrent requests run in parallel handlers, as
in separate Lambda sandboxes. moto runs one DynamoDB request at a time (the emulator's
stand-in for DynamoDB's serializable transactions), so what is tested is the handler's
own design: a check followed by a separate write would still let two creates through.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from opskit_local.api_gateway import ApiServer
from opskit_local.user_service import UserServiceResources, api_server
from tests.functions.user_service.conftest import AUTH, Api, Clients, drain

SANDBOXES = 4


@pytest.fixture(scope="module")
def api_server_of_module() -> Iterator[ApiServer]:
    """Four sandbox processes behind the adapter, instead of the handler in this process."""
    server = api_server(concurrency=SANDBOXES).start()
    yield server
    server.stop()


def together(*calls: Callable[[], requests.Response]) -> list[int]:
    """Runs every call at once (each on its own thread and connection); their statuses."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> int:
        barrier.wait()
        return call().status_code

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def table_state(aws: Clients, table_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """({user email: user id}, {guarded email: owner id}) read straight from the table."""
    users: dict[str, str] = {}
    guards: dict[str, str] = {}
    for page in aws("dynamodb").get_paginator("scan").paginate(TableName=table_name):
        for item in page["Items"]:
            if item["item_type"]["S"] == "user":
                assert item["email"]["S"] not in users, "two users share an address"
                users[item["email"]["S"]] = item["user_id"]["S"]
            else:
                guards[item["user_id"]["S"].removeprefix("EMAIL#")] = item["owner_id"]["S"]
    return users, guards


def post(url: str, email: str) -> Callable[[], requests.Response]:
    return lambda: requests.post(
        f"{url}/users", json={"email": email, "name": "Racer"}, headers=AUTH, timeout=30
    )


def test_of_two_concurrent_creates_with_one_address_exactly_one_succeeds(
    api: Api, aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN ten addresses, each wanted by two clients at the same moment
    addresses = [f"race{i}@example.com" for i in range(10)]
    calls = [post(api.url, address) for address in addresses for _ in range(2)]

    # WHEN all twenty creates run at once
    statuses = together(*calls)

    # THEN for every address exactly one 201 and one 409
    for i, address in enumerate(addresses):
        assert sorted(statuses[2 * i : 2 * i + 2]) == [201, 409], address
    # AND the table holds one user and one guard per address, and nothing else
    users, guards = table_state(aws, resources.table_name)
    assert set(users) == set(addresses)
    assert guards == users
    # AND one user_created event per created user
    assert len(drain(aws, resources)) == 10


def test_of_two_users_moving_to_one_address_at_once_exactly_one_gets_it(
    api: Api, aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN ada and grace
    ada = api.create("ada@example.com").json()["user"]["user_id"]
    grace = api.create("grace@example.com").json()["user"]["user_id"]

    # WHEN both change to countess@ at once
    statuses = together(
        lambda: requests.put(
            f"{api.url}/users/{ada}", json={"email": "countess@example.com"}, headers=AUTH
        ),
        lambda: requests.put(
            f"{api.url}/users/{grace}", json={"email": "countess@example.com"}, headers=AUTH
        ),
    )

    # THEN one 200 and one 409; the loser keeps its address
    assert sorted(statuses) == [200, 409]
    users, guards = table_state(aws, resources.table_name)
    winner, loser = (ada, grace) if statuses[0] == 200 else (grace, ada)
    assert users["countess@example.com"] == winner
    assert loser in users.values()
    assert guards == users


def test_a_storm_of_creates_moves_and_deletes_leaves_one_owner_per_address(
    api: Api, aws: Clients, resources: UserServiceResources
) -> None:
    # GIVEN four addresses fought over by 24 concurrent requests of every kind
    rng = random.Random(7)
    addresses = [f"contested{i}@example.com" for i in range(4)]
    seed = [api.create(address).json()["user"]["user_id"] for address in addresses[:2]]

    def action() -> Callable[[], requests.Response]:
        kind = rng.choice(["create", "move", "delete"])
        user_id, address = rng.choice(seed), rng.choice(addresses)
        if kind == "create":
            return post(api.url, address)
        if kind == "move":
            return lambda: requests.put(
                f"{api.url}/users/{user_id}", json={"email": address}, headers=AUTH
            )
        return lambda: requests.delete(f"{api.url}/users/{user_id}", headers=AUTH)

    # WHEN they all run at once
    statuses = together(*[action() for _ in range(24)])

    # THEN every answer is a decision (no 5xx), and the table is consistent: every user
    # has its address guarded by itself, and no guard is left without its user
    assert set(statuses) <= {200, 201, 204, 404, 409}, Counter(statuses)
    users, guards = table_state(aws, resources.table_name)
    assert guards == users
    assert set(users) <= set(addresses)
