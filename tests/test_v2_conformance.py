"""The v2 routes against the Open Inference Protocol's own OpenAPI document, driven by schemathesis over loopback:
generated requests (and one that succeeds) get no 5xx, and every answer matches the document's schema for its
status and content type.

The document is fetched by ``make test`` (tests/tools/fetch_oip_spec.py says from where); the test fails, not
skips, without it. Three edits to it: paths are limited to the operations the protocol's REST specification
defines (the document also describes MLServer's streaming and generate extensions); the model name and version
parameters are held to the served model, so generated requests reach the model instead of all ending in 404; and
``TensorData``, which MLServer's copy gives the invalid JSON Schema type "bytes", is the specification's
``tensor_data``: an array of numbers, strings, booleans or nested arrays.
"""

from __future__ import annotations

import base64
import json

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from tests.conftest import ROOT, Server, jpeg_bytes

pytestmark = pytest.mark.slow
SPEC = ROOT / "build" / "open-inference-protocol" / "dataplane.json"
MODEL = "/v2/models/{model_name}"
OPERATIONS = {
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    *(f"{base}{suffix}" for base in (MODEL, f"{MODEL}/versions/{{model_version}}") for suffix in ("", "/ready", "/infer")),
}
SERVED = {"model_name": "toy", "model_version": "1"}


def protocol_document() -> dict:
    if not SPEC.is_file():
        raise RuntimeError(f"{SPEC} is missing: run `make test`, or python tests/tools/fetch_oip_spec.py {SPEC}")
    document = json.loads(SPEC.read_text())
    missing = OPERATIONS - set(document["paths"])
    assert not missing, f"the protocol document lacks {missing}"
    document["components"]["schemas"]["TensorData"] = {
        "type": "array",
        "items": {
            "anyOf": [{"$ref": "#/components/schemas/TensorData"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}]
        },
    }
    document["paths"] = {path: item for path, item in document["paths"].items() if path in OPERATIONS}
    for item in document["paths"].values():
        for parameter in item.get("parameters", []):
            if parameter["name"] in SERVED:
                parameter["schema"] = {"type": "string", "enum": [SERVED[parameter["name"]]]}
        if "post" in item:  # one request that succeeds, beside the generated ones
            image = base64.b64encode(jpeg_bytes()).decode()
            example = {"id": "42", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}]}
            item["post"]["requestBody"]["content"]["application/json"]["example"] = example
    return document


schema = schemathesis.openapi.from_dict(protocol_document())
STATUSES: dict[str, set[int]] = {}  # operation -> statuses seen, for the test after this one


@pytest.fixture(scope="module")
def server(toy_repository):
    s = Server(toy_repository, "--max-delay-ms", "0")
    yield s
    s.stop()


@schema.parametrize()
@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_v2_routes_conform_to_the_protocol_document(case, server):
    response = case.call(base_url=server.url)
    STATUSES.setdefault(case.operation.label, set()).add(response.status_code)
    case.validate_response(response, checks=(not_a_server_error, response_schema_conformance, content_type_conformance))


def test_the_generated_requests_reached_the_model():
    """The conformance run above is only worth something if it got past 404s: every operation answered 200 at
    least once (infer through the document's example) and infer refused some generated requests with 400."""
    assert len(STATUSES) == len(OPERATIONS), STATUSES
    assert all(200 in statuses for statuses in STATUSES.values()), STATUSES
    assert 400 in STATUSES[f"POST {MODEL}/infer"], STATUSES
