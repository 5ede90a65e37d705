"""The functions of a synthesized template, found by the name OpsFunction gives them.

Every OpsFunction marks its CloudFormation resource with ``Metadata: {"opskit:function":
"<name>"}``: the handler folder, plus the module where it is not ``app`` (``notification``,
``user_service.api``). That name is what ``make invoke FN=`` takes. A template may hold a
name more than once (every smoke test is ``smoke_test``): the name stands for the one
whose logical id sorts first, and any of them can be named by its logical id instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opskit_local.errors import LocalError
from opskit_local.functions import FUNCTIONS_DIR

FUNCTION_METADATA = "opskit:function"
"""Written by opskit.constructs.ops_function (FUNCTION_METADATA there)."""


@dataclass(frozen=True)
class LocalFunction:
    """One Lambda function of the template, as local invoke runs it."""

    name: str
    logical_id: str
    handler: str
    """``module.function`` inside the folder."""
    memory_mb: int
    timeout_seconds: int
    log_level: str | None
    """The function's application log level (its LoggingConfig), as Lambda passes it."""
    variables: Mapping[str, Any]
    """Its environment variables as the template has them: references unresolved."""
    role: Any
    """The template's Role property (a GetAtt of the role), to find its policies."""

    @property
    def folder(self) -> Path:
        return FUNCTIONS_DIR / self.name.split(".")[0]

    @property
    def module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]


def _function(logical_id: str, resource: Mapping[str, Any]) -> LocalFunction | None:
    name = (resource.get("Metadata") or {}).get(FUNCTION_METADATA)
    if resource.get("Type") != "AWS::Lambda::Function" or not isinstance(name, str):
        return None
    properties = resource.get("Properties") or {}
    module = name.partition(".")[2] or "app"
    return LocalFunction(
        name=name,
        logical_id=logical_id,
        handler=properties.get("Handler") or f"{module}.lambda_handler",  # images have none
        memory_mb=int(properties.get("MemorySize", 128)),
        timeout_seconds=int(properties.get("Timeout", 3)),
        log_level=(properties.get("LoggingConfig") or {}).get("ApplicationLogLevel"),
        variables=(properties.get("Environment") or {}).get("Variables") or {},
        role=properties.get("Role"),
    )


class Catalog:
    """The template's opskit functions by name and by logical id."""

    def __init__(self, functions: Iterable[LocalFunction]) -> None:
        self.by_logical_id: dict[str, LocalFunction] = {}
        self.by_name: dict[str, LocalFunction] = {}
        for function in sorted(functions, key=lambda function: function.logical_id):
            self.by_logical_id[function.logical_id] = function
            self.by_name.setdefault(function.name, function)

    @classmethod
    def of(cls, template: Mapping[str, Any]) -> Catalog:
        found = (_function(k, v) for k, v in (template.get("Resources") or {}).items())
        return cls(function for function in found if function is not None)

    @property
    def names(self) -> list[str]:
        return sorted(self.by_name)

    def get(self, name: str) -> LocalFunction:
        """The function called `name` (or with that logical id); a one-line error if none."""
        found = self.by_name.get(name) or self.by_logical_id.get(name)
        if found is None:
            raise LocalError(f"unknown function {name!r}; functions: {', '.join(self.names)}")
        if not (found.folder / f"{found.module}.py").is_file():
            raise LocalError(
                f"function {name!r} has no handler module {found.module}.py in {found.folder}"
            )
        return found
