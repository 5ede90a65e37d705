"""Specification of page tokens (opskit/functions/user_service/page_tokens.py) beyond what
a caller can reach through the API (test_api.py): what a token signed with the right key
must still hold to be read."""

from __future__ import annotations

import pytest

from opskit_local.functions import load_function

page_tokens = load_function("user_service", "page_tokens")

KEY = page_tokens.derive_key("s" * page_tokens.MIN_SECRET_CHARS)
QUERY = {"email": None, "limit": "10"}
ATTRIBUTES = ("pk", "created_at")
POSITION = {"pk": "USER#1", "created_at": "2026-11-28T10:00:00.000000Z"}


def test_a_token_reads_back_its_position_whatever_the_order_of_the_query() -> None:
    token = page_tokens.issue(KEY, query=QUERY, position=POSITION)

    reordered = dict(reversed(QUERY.items()))

    assert page_tokens.read(KEY, token, query=reordered, attributes=ATTRIBUTES) == POSITION


def test_a_token_of_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(page_tokens, "_VERSION", 2)
    token = page_tokens.issue(KEY, query=QUERY, position=POSITION)
    monkeypatch.setattr(page_tokens, "_VERSION", 1)

    with pytest.raises(page_tokens.InvalidTokenError, match="another version"):
        page_tokens.read(KEY, token, query=QUERY, attributes=ATTRIBUTES)


@pytest.mark.parametrize(
    "position",
    [{"pk": "USER#1"}, {**POSITION, "email": "a@example.com"}, {**POSITION, "pk": ""}],
    ids=["attribute-missing", "attribute-extra", "value-empty"],
)
def test_a_signed_token_without_a_whole_position_of_this_listing_is_refused(
    position: dict[str, str],
) -> None:
    token = page_tokens.issue(KEY, query=QUERY, position=position)

    with pytest.raises(page_tokens.InvalidTokenError, match="does not hold a position"):
        page_tokens.read(KEY, token, query=QUERY, attributes=ATTRIBUTES)


def test_the_secret_must_have_at_least_32_characters() -> None:
    assert len(page_tokens.derive_key("s" * 32)) == 32

    with pytest.raises(page_tokens.WeakSecretError, match="31 characters; at least 32"):
        page_tokens.derive_key("s" * 31)
