"""Load test for a running resnet-serve: users post real images and check every answer.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000                       # web UI on :8089
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 64 -r 16 -t 60s \\
        --images ../shared/data/photos --csv results --html report.html

Two kinds of user: ``ClassifyUser`` alternates raw-body and multipart uploads to ``/classify``; ``V2User`` speaks
the Open Inference Protocol (KServe v2), the way tritonclient does: each image as a BYTES element in binary tensor
data (or base64 JSON), the top k as classification strings. Both post images from ``--images`` (or $LOADTEST_IMAGES; default:
the bundled CIFAR-10 samples in tests/fixtures/cifar10) with a random ``top_k``, and checks the response shape.
The run exits non-zero when the error ratio exceeds ``--max-error-ratio`` (default 1%) or the 99th percentile
exceeds ``--max-p99-ms`` (default 2000 ms).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

from locust import FastHttpUser, between, events, task

DEFAULT_IMAGES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cifar10"
SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
IMAGES: list[tuple[str, bytes, str]] = []


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument(
        "--images", default=os.environ.get("LOADTEST_IMAGES", str(DEFAULT_IMAGES)), help="folder of images to post"
    )
    parser.add_argument("--max-error-ratio", type=float, default=0.01, help="fail the run above this error ratio")
    parser.add_argument("--max-p99-ms", type=float, default=2000.0, help="fail the run above this 99th percentile (ms)")
    parser.add_argument("--max-top-k", type=int, default=5, help="top_k is drawn from 1..this")


@events.test_start.add_listener
def _load_images(environment, **_kwargs) -> None:
    folder = Path(environment.parsed_options.images)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"--images {folder}: no .jpg/.jpeg/.png/.webp files")
    IMAGES[:] = [(p.name, p.read_bytes(), SUFFIXES[p.suffix.lower()]) for p in files]
    logging.info("posting %d images from %s", len(IMAGES), folder)


@events.quitting.add_listener
def _verdict(environment, **_kwargs) -> None:
    stats, options = environment.stats.total, environment.parsed_options
    p99 = stats.get_response_time_percentile(0.99) or 0.0
    problems = []
    if stats.num_requests == 0:
        problems.append("no requests were made")
    if stats.fail_ratio > options.max_error_ratio:
        problems.append(f"error ratio {stats.fail_ratio:.2%} > {options.max_error_ratio:.2%}")
    if p99 > options.max_p99_ms:
        problems.append(f"p99 {p99:.0f} ms > {options.max_p99_ms:.0f} ms")
    if problems:
        logging.error("load test failed: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        logging.info(
            "load test passed: %d requests, error ratio %.2f%%, p99 %.0f ms", stats.num_requests, 100 * stats.fail_ratio, p99
        )


class ImageUser(FastHttpUser):
    """What both users share: the served model (its name and class count) and posting with a check of the answer."""

    abstract = True
    wait_time = between(0, 0.05)
    max_top_k = 5
    model = ""

    def on_start(self) -> None:
        """Cap top_k at the served model's number of classes, and learn its name (GET /v1/models)."""
        self.max_top_k = self.environment.parsed_options.max_top_k
        response = self.client.get("/v1/models", name="/v1/models")
        if response.status_code == 200:
            models = response.json()["models"]
            default = next((m for m in models if m.get("default")), models[0] if models else None)
            if default and default.get("labels"):
                self.max_top_k = min(self.max_top_k, default["labels"])
            self.model = default["name"] if default else ""

    def _top_k(self) -> int:
        return random.randint(1, self.max_top_k)

    def _post(self, path: str, body: bytes, headers: dict, name: str, check: Callable, top_k: int) -> None:
        with self.client.post(path, data=body, headers=headers, name=name, catch_response=True) as response:
            if response.status_code == 200:
                check(response, top_k)
            else:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


class ClassifyUser(ImageUser):
    """Our API: POST /classify with a raw body or a multipart upload."""

    def _check(self, response, top_k: int) -> None:
        try:
            body = response.json()
            predictions = body["predictions"]
            scores = [p["score"] for p in predictions]
            ok = len(predictions) == top_k and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
            ok = ok and isinstance(body["model"], str) and {"queue", "preprocess", "inference", "total"} <= set(body["timing_ms"])
        except Exception as exc:  # any malformed answer is a failure
            response.failure(f"bad response: {exc}: {response.text[:200]}")
            return
        if not ok:
            response.failure(f"unexpected response shape: {response.text[:200]}")

    @task(3)
    def classify_raw(self) -> None:
        _, data, ctype = random.choice(IMAGES)
        top_k = self._top_k()
        self._post(f"/classify?top_k={top_k}", data, {"Content-Type": ctype}, "/classify raw", self._check, top_k)

    @task(1)
    def classify_multipart(self) -> None:
        name, data, ctype = random.choice(IMAGES)
        top_k = self._top_k()
        boundary = "resnetserveboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        self._post(f"/classify?top_k={top_k}", body, headers, "/classify multipart", self._check, top_k)


class V2User(ImageUser):
    """The Open Inference Protocol's client: POST /v2/models/NAME/infer, as tritonclient sends it."""

    def _check_v2(self, response, top_k: int) -> None:
        try:
            if "inference-header-content-length" in response.headers:
                raise ValueError("asked for JSON outputs, got binary tensor data")
            [output] = response.json()["outputs"]
            scores = [float(s.split(":")[0]) for s in output["data"]]
            ok = output["datatype"] == "BYTES" and output["shape"] == [1, top_k] and scores == sorted(scores, reverse=True)
        except Exception as exc:  # any malformed answer is a failure
            response.failure(f"bad response: {exc}: {response.text[:200]}")
            return
        if not ok:
            response.failure(f"unexpected response shape: {response.text[:200]}")

    def _infer(self, body: bytes, headers: dict, top_k: int, name: str) -> None:
        self._post(f"/v2/models/{self.model}/infer", body, headers, name, self._check_v2, top_k)

    @task(3)
    def infer_binary(self) -> None:
        _, data, _ = random.choice(IMAGES)
        top_k = self._top_k()
        header = json.dumps(
            {
                "inputs": [
                    {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(data) + 4}}
                ],
                "outputs": [{"name": "probabilities", "parameters": {"classification": top_k, "binary_data": False}}],
            }
        ).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
        self._infer(header + struct.pack("<I", len(data)) + data, headers, top_k, "/v2 infer binary")

    @task(1)
    def infer_json(self) -> None:
        _, data, _ = random.choice(IMAGES)
        top_k = self._top_k()
        request = {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": top_k}}],
        }
        self._infer(json.dumps(request).encode(), {"Content-Type": "application/json"}, top_k, "/v2 infer json")
