"""Schemathesis against the API's own OpenAPI document: generated requests (bounded) sent to a
real server on 127.0.0.1, answers checked against the schema, and never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dhash_service.api.app import create_app
from dhash_service.config import Settings
from tests.support.api import AUTH, settings_for
from tests.support.live_server import running_app, wait_ready
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Whether the answer matches the document. Not "positive data accepted": the schema cannot say
# "bytes that decode as an image" or "a hash of the configured algorithm", so a schema-valid 4xx
# is right. Not "negative data rejected" either: every request carries the token, and unknown
# query parameters are ignored, as HTTP APIs usually do.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The document is the app's own; building the app does no I/O, so it can happen at import time.
schema = schemathesis.openapi.from_dict(create_app(Settings(api_tokens=["x"])).openapi())


@pytest.fixture(scope="module")
def live_api(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    database = postgres_server.create_database("schema")
    tmp: Path = tmp_path_factory.mktemp("schema")
    try:
        with running_app(create_app(settings_for(postgres_server.url(database), tmp))) as url:
            wait_ready(url)
            yield url
    finally:
        postgres_server.drop_database(database)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented_and_never_500(
    case: schemathesis.Case, live_api: str
) -> None:
    case.call_and_validate(base_url=live_api, headers=AUTH, checks=CHECKS)
