"""The API against its OpenAPI document (opskit/functions/user_service/openapi.json).

schemathesis generates requests for every operation from the document, valid ones and
ones that break it, sends them over HTTP to the local server (`make api`'s adapter in
front of the handler, moto behind it), and checks every response: no 5xx, a status the
document lists, a body and headers matching its schema, and a 4xx for every request
that breaks the document. Hypothesis runs derandomized, without an example database,
so every run sends the same requests.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from opskit_local.user_service import OPENAPI
from tests.functions.user_service.conftest import Api

schema = schemathesis.openapi.from_path(str(OPENAPI))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def seeded_api(api: Api) -> Api:
    """The API with a few users, so reads and writes meet existing ones too."""
    for i in range(3):
        assert api.create(f"seed{i}@example.com", f"Seed {i}").status_code == 201
    return api


@schema.parametrize()
@settings(
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_conforms_to_the_document(case: Any, seeded_api: Api) -> None:
    case.call_and_validate(base_url=seeded_api.url, session=seeded_api.http, checks=CHECKS)
