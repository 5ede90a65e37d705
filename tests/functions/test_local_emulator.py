"""The emulator behind `make api`, `make local` and `make invoke` (opskit_local.emulator):
where it closes a gap between moto and DynamoDB, DynamoDB's behaviour is the specification.
A cancelled transaction leaves every item as it was, and only the items it named are
saved and restored (moto copies whole tables), for tables with and without a sort key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from opskit_local.emulator import Emulator


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    with Emulator(region="eu-west-3") as emulator:
        yield emulator.client("dynamodb")


def table(dynamodb: Any, name: str, *keys: str) -> str:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": key, "KeyType": kind}
            for key, kind in zip(keys, ("HASH", "RANGE"), strict=False)
        ],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"} for key in keys],
    )
    return name


def items(dynamodb: Any, name: str) -> dict[str, str]:
    scanned = dynamodb.scan(TableName=name, ConsistentRead=True)["Items"]
    return {
        "/".join(item[k]["S"] for k in ("pk", "sk") if k in item): item["v"]["S"]
        for item in scanned
    }


@pytest.mark.parametrize("keys", [("pk",), ("pk", "sk")], ids=["hash key", "hash and sort key"])
def test_a_cancelled_transaction_leaves_every_item_as_it_was(dynamodb: Any, keys) -> None:
    name = table(dynamodb, f"cancelled-{len(keys)}", *keys)

    def key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, **({"sk": {"S": sk}} if len(keys) == 2 else {})}

    for pk, sk, v in (("a", "1", "one"), ("b", "2", "two")):
        dynamodb.put_item(TableName=name, Item={**key(pk, sk), "v": {"S": v}})
    before = items(dynamodb, name)

    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": name, "Item": {**key("c", "3"), "v": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": name,
                        "Key": key("a", "1"),
                        "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"S": "changed"}},
                    }
                },
                {"Delete": {"TableName": name, "Key": key("b", "2")}},
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": key("nobody", "0"),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert items(dynamodb, name) == before


def test_a_transaction_that_succeeds_writes_every_item(dynamodb: Any) -> None:
    name = table(dynamodb, "committed", "pk", "sk")
    dynamodb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {"pk": {"S": p}, "sk": {"S": s}, "v": {"S": v}}}}
            for p, s, v in (("a", "1", "one"), ("a", "2", "two"))
        ]
    )
    assert items(dynamodb, name) == {"a/1": "one", "a/2": "two"}


def test_index_item_counts_are_reported_as_dynamodb_does(dynamodb: Any) -> None:
    dynamodb.create_table(
        TableName="indexed",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "email", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-email",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    for pk, email in (("1", "a@x"), ("2", None), ("3", "c@x")):
        item = {"pk": {"S": pk}, **({"email": {"S": email}} if email else {})}
        dynamodb.put_item(TableName="indexed", Item=item)
    [index] = dynamodb.describe_table(TableName="indexed")["Table"]["GlobalSecondaryIndexes"]
    assert index["ItemCount"] == 2, "only items that have the index key are in the index"
