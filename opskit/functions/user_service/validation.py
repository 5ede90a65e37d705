"""What the API accepts, checked strictly, every problem named with its field.

Bad input must end in a 400 that says what to fix, never in a 500 or in a stored value
that later breaks something: JSON is parsed without NaN, duplicate keys or deep nesting
surprises, strings must be encodable (no lone surrogates), and every rule here matches
the OpenAPI document (``openapi.json``) field for field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 10 * 1024
MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 100
MIN_LIMIT, MAX_LIMIT, DEFAULT_LIMIT = 1, 100, 50
CREATE_FIELDS = ("email", "name")
LIST_PARAMETERS = ("limit", "next_token", "email")

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TLD = r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
_EMAIL = re.compile(rf"^({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+{_TLD})$")
_LIMIT = re.compile(r"^[0-9]{1,3}$")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ValidationError(ValueError):
    """The request is not acceptable; ``problems`` says why, field by field."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class ListQuery:
    limit: int
    next_token: str | None
    email: str | None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(
        type(value), "array" if isinstance(value, list) else "object"
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValidationError(
                "body is not valid JSON", [Problem("body", f"key {key[:40]!r} appears twice")]
            )
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValidationError("body is not valid JSON", [Problem("body", f"{name} is not JSON")])


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object: UTF-8, strict JSON, no duplicate keys."""
    try:
        text = body.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ValidationError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "malformed JSON"
        if isinstance(error, RecursionError):
            reason = "nested too deeply"
        raise ValidationError("body is not valid JSON", [Problem("body", reason)]) from None
    if not isinstance(document, dict):
        raise ValidationError(
            "body must be a JSON object",
            [Problem("body", f"expected object, got {_type_name(document)}")],
        )
    return document


def email(value: Any, *, field: str = "email") -> str:
    """A syntactically valid address (ASCII, dot-atom local part, DNS domain), lower-cased."""
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a string",
            [Problem(field, f"expected string, got {_type_name(value)}")],
        )
    problem = None
    if len(value) > MAX_EMAIL_CHARS:
        problem = f"longer than {MAX_EMAIL_CHARS} characters"
    else:
        match = _EMAIL.match(value)
        if match is None:
            problem = "not a valid e-mail address"
        elif len(match.group(1)) > 64:
            problem = "local part longer than 64 characters"
    if problem:
        raise ValidationError(f"{field} is not a valid e-mail address", [Problem(field, problem)])
    return value.lower()


def name(value: Any) -> str:
    """1 to 100 characters, not only whitespace, no control characters; stored stripped."""
    if not isinstance(value, str):
        raise ValidationError(
            "name must be a string", [Problem("name", f"expected string, got {_type_name(value)}")]
        )
    problem = None
    if len(value) > MAX_NAME_CHARS:
        problem = f"longer than {MAX_NAME_CHARS} characters"
    elif not value.strip():
        problem = "empty"
    elif not _encodable(value) or any(unicodedata.category(c) == "Cc" for c in value):
        problem = "contains control or unpaired surrogate characters"
    if problem:
        raise ValidationError("name is not valid", [Problem("name", problem)])
    return value.strip()


def _fields(
    document: Mapping[str, Any], *, allowed: Sequence[str], required: Sequence[str]
) -> list[Problem]:
    problems = [
        Problem(key[:60] if _encodable(key) else "?", "unknown field")
        for key in document
        if key not in allowed
    ]
    problems += [Problem(key, "missing") for key in required if key not in document]
    return problems


def create_body(document: Mapping[str, Any]) -> tuple[str, str]:
    """(email, name) of a create request; every problem of the body at once."""
    problems = _fields(document, allowed=CREATE_FIELDS, required=CREATE_FIELDS)
    values: dict[str, str] = {}
    for key, check in (("email", email), ("name", name)):
        if key in document:
            try:
                values[key] = check(document[key])
            except ValidationError as error:
                problems += error.problems
    if problems:
        raise ValidationError("request body is not valid", problems)
    return values["email"], values["name"]


def update_body(document: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(email, name) of an update request, either None when absent; at least one given."""
    problems = _fields(document, allowed=CREATE_FIELDS, required=())
    if not document:
        problems.append(Problem("body", "give name, email or both"))
    values: dict[str, str] = {}
    for key, check in (("email", email), ("name", name)):
        if key in document:
            try:
                values[key] = check(document[key])
            except ValidationError as error:
                problems += error.problems
    if problems:
        raise ValidationError("request body is not valid", problems)
    return values.get("email"), values.get("name")


def no_query(parameters: Mapping[str, Sequence[str]]) -> None:
    """Routes without query parameters refuse any, rather than ignore a caller's typo."""
    if parameters:
        raise ValidationError(
            "query parameters are not accepted here",
            [Problem(f"query.{key[:40]}", "unknown parameter") for key in sorted(parameters)],
        )


def list_query(parameters: Mapping[str, Sequence[str]]) -> ListQuery:
    """``limit`` (1-100, default 50), ``next_token`` and ``email``, each at most once."""
    problems = [
        Problem(f"query.{key[:40]}", "unknown parameter")
        for key in sorted(parameters)
        if key not in LIST_PARAMETERS
    ]
    single: dict[str, str] = {}
    for key in LIST_PARAMETERS:
        values = parameters.get(key)
        if values is None:
            continue
        if len(values) != 1:
            problems.append(Problem(f"query.{key}", "given more than once"))
        else:
            single[key] = values[0]
    limit = DEFAULT_LIMIT
    if "limit" in single:
        raw = single["limit"]
        if _LIMIT.match(raw) and MIN_LIMIT <= int(raw) <= MAX_LIMIT:
            limit = int(raw)
        else:
            problems.append(
                Problem("query.limit", f"must be a whole number from {MIN_LIMIT} to {MAX_LIMIT}")
            )
    if "next_token" in single and not single["next_token"]:
        problems.append(Problem("query.next_token", "empty"))
    address = None
    if "email" in single:
        try:
            address = email(single["email"], field="query.email")
        except ValidationError as error:
            problems += error.problems
    if problems:
        raise ValidationError("query parameters are not valid", problems)
    return ListQuery(limit=limit, next_token=single.get("next_token"), email=address)
