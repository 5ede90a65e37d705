"""The API's routes, parameters and request models, read from the handler's OpenAPI document.

`opskit/functions/user_service/openapi.json` is the one description of the API: the
handler is tested against it, and the construct builds API Gateway's resources, methods,
declared parameters and body models from it, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import aws_apigateway as apigw

from opskit.bundling import FUNCTIONS_DIR
from opskit.errors import PropsError

DOCUMENT = FUNCTIONS_DIR / "user_service" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")
_SCHEMA_REF = "#/components/schemas/"
_PARAMETER_SOURCES = {"path": "path", "query": "querystring", "header": "header"}

_TYPES = {
    "object": apigw.JsonSchemaType.OBJECT,
    "string": apigw.JsonSchemaType.STRING,
    "integer": apigw.JsonSchemaType.INTEGER,
    "number": apigw.JsonSchemaType.NUMBER,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "array": apigw.JsonSchemaType.ARRAY,
}
_KEYWORDS = {
    "description": "description",
    "format": "format",
    "maxLength": "max_length",
    "minLength": "min_length",
    "pattern": "pattern",
    "required": "required",
    "minProperties": "min_properties",
    "maxProperties": "max_properties",
    "minimum": "minimum",
    "maximum": "maximum",
    "maxItems": "max_items",
    "minItems": "min_items",
    "enum": "enum",
}
"""OpenAPI 3.0 schema keywords that mean the same in API Gateway's JSON Schema draft 4."""


@dataclass(frozen=True)
class Operation:
    """One method of one path, as API Gateway needs it."""

    path: str
    method: str
    operation_id: str
    parameters: Mapping[str, bool]
    """API Gateway request parameters (`method.request.querystring.limit`) -> required."""
    body_model: str | None
    """The `components.schemas` name of the JSON body, if the operation takes one."""


def load(path: Path = DOCUMENT) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def operations(document: Mapping[str, Any]) -> list[Operation]:
    """Every operation of the document, in its order."""
    found = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            found.append(
                Operation(
                    path=path,
                    method=method.upper(),
                    operation_id=operation["operationId"],
                    parameters={
                        f"method.request.{_PARAMETER_SOURCES[p['in']]}.{p['name']}": bool(
                            p.get("required", False)
                        )
                        for p in [*shared, *operation.get("parameters", [])]
                    },
                    body_model=_body_model(path, method, operation),
                )
            )
    return found


def _body_model(path: str, method: str, operation: Mapping[str, Any]) -> str | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    ref = body["content"]["application/json"]["schema"].get("$ref", "")
    if not ref.startswith(_SCHEMA_REF):
        raise PropsError(
            f"openapi.json: {method.upper()} {path} must take a body by "
            f"$ref to {_SCHEMA_REF}<name>, so API Gateway can model it"
        )
    return str(ref[len(_SCHEMA_REF) :])


def json_schema(schema: Mapping[str, Any], *, where: str, top: bool = True) -> apigw.JsonSchema:
    """`schema` (OpenAPI 3.0) as API Gateway's JSON Schema draft 4; refuses what it cannot
    translate exactly, so a model never validates less, or more, than the document says."""
    values: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword == "type":
            values["type"] = _TYPES[value]
        elif keyword == "properties":
            values["properties"] = {
                name: json_schema(child, where=f"{where}.{name}", top=False)
                for name, child in value.items()
            }
        elif keyword == "additionalProperties" and isinstance(value, bool):
            values["additional_properties"] = value
        elif keyword in _KEYWORDS:
            values[_KEYWORDS[keyword]] = value
        else:
            raise PropsError(
                f"openapi.json: {where}: keyword {keyword!r} has no exact API Gateway model "
                "equivalent here; extend opskit.constructs.user_service.openapi"
            )
    if top:
        values["schema"] = apigw.JsonSchemaVersion.DRAFT4
        values["title"] = where.rsplit(".", 1)[-1]
    return apigw.JsonSchema(**values)
