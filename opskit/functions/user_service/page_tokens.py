"""Opaque page tokens that callers can neither forge, alter nor carry to another query.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))``. The payload
holds where the next page starts (the DynamoDB key of the last user shown: ids and
creation times, never an e-mail address) and a keyed digest of the query that issued it,
so a token presented with other filters is refused as well as one whose bytes changed.

Where the key comes from: a Secrets Manager secret (``PAGE_TOKEN_SECRET_ARN``, at least
32 characters, which the construct generates), read through the layer's cache (5 min).
Not an environment variable: those are readable by anyone who may read the function's
configuration. Not derived from anything a caller could learn (table name, account id),
and not from the function's own credentials, which differ per sandbox and rotate.
Rotating the secret invalidates outstanding tokens: callers get 400 and list again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping

MIN_SECRET_CHARS = 32
MAX_TOKEN_CHARS = 1024
_VERSION = 1
_KEY_LABEL = b"opskit user-service page token v1"
_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$")


class InvalidTokenError(ValueError):
    """The token was not issued by this service, was altered, or belongs to another query."""


class WeakSecretError(ValueError):
    """The signing secret is too short to be a key."""


def derive_key(secret: str) -> bytes:
    """A 256-bit signing key from the secret string; the label keeps it for this use only."""
    if len(secret) < MIN_SECRET_CHARS:
        raise WeakSecretError(
            f"page-token secret has {len(secret)} characters; at least {MIN_SECRET_CHARS}"
        )
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _query_digest(key: bytes, query: Mapping[str, str | None]) -> str:
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return _b64(hmac.new(key, b"query\x00" + canonical, hashlib.sha256).digest()[:12])


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"token\x00" + payload, hashlib.sha256).digest()


def issue(key: bytes, *, query: Mapping[str, str | None], position: Mapping[str, str]) -> str:
    """A token for the page after ``position``, valid only with the same ``query``."""
    payload = json.dumps(
        {"v": _VERSION, "q": _query_digest(key, query), "k": dict(position)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def read(
    key: bytes, token: str, *, query: Mapping[str, str | None], attributes: tuple[str, ...]
) -> dict[str, str]:
    """The position held by ``token``, checked against ``query`` and the key's attributes."""
    match = _TOKEN.match(token) if len(token) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise InvalidTokenError("next_token is malformed")
    try:
        payload = _unb64(match.group(1))
        signature = _unb64(match.group(2))
    except (binascii.Error, ValueError):
        raise InvalidTokenError("next_token is malformed") from None
    if not hmac.compare_digest(signature, _mac(key, payload)):
        raise InvalidTokenError("next_token was not issued by this service or was altered")
    try:
        document = json.loads(payload)
    except ValueError:
        raise InvalidTokenError("next_token is malformed") from None
    if not isinstance(document, dict) or document.get("v") != _VERSION:
        raise InvalidTokenError("next_token is from another version of this service")
    if not hmac.compare_digest(str(document.get("q")), _query_digest(key, query)):
        raise InvalidTokenError("next_token belongs to a different query")
    position = document.get("k")
    if (
        not isinstance(position, dict)
        or set(position) != set(attributes)
        or not all(isinstance(value, str) and value for value in position.values())
    ):
        raise InvalidTokenError("next_token does not hold a position in this listing")
    return position
