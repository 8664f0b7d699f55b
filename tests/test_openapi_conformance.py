"""Our API against its own OpenAPI document (/openapi.json), driven by schemathesis over loopback: generated
requests to every documented route get no 5xx, and each answer matches the schema documented for its status
and content type. Bounded in examples; the v2 routes are checked against the protocol's own document
(test_v2_conformance.py)."""

from __future__ import annotations

import shutil

import hypothesis
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from service.app import create_app
from service.settings import Settings
from tests.conftest import Server

pytestmark = pytest.mark.slow


@schemathesis.check
def no_fault(ctx, response, case) -> None:
    """No 5xx but the two documented refusals a request can earn: 503 (overloaded, draining) and 504 (the deadline
    it set passed: the generator sends X-Request-Timeout-Ms values down to 5e-324)."""
    if response.status_code >= 500 and response.status_code not in (503, 504):
        raise AssertionError(f"{response.status_code}: {response.text[:200]}")


# Generated bodies for every image type /classify documents (schemathesis knows the others already).
schemathesis.serializer.alias(["image/bmp", "image/tiff"], "application/octet-stream")

CHECKS = (no_fault, response_schema_conformance, content_type_conformance)


@pytest.fixture(scope="module")
def server(toy_repository, tmp_path_factory):
    repository = tmp_path_factory.mktemp("conformance") / "repo"  # a copy: the admin routes write rollouts.json
    shutil.copytree(toy_repository, repository)
    s = Server(repository, "--max-delay-ms", "0")
    yield s
    s.stop()


# The document the server serves at /openapi.json (built without starting the app: no model is needed for it).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).exclude(path_regex="^/v2")


@schema.parametrize()
@hypothesis.settings(max_examples=20, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_our_routes_conform_to_their_openapi_document(case, server):
    response = case.call(base_url=server.url)
    case.validate_response(response, checks=CHECKS)
