"""Service settings: every field is a ``--flag`` of ``python -m service`` and a ``RESNET_SERVE_*`` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import cpus
from .imaging import DEFAULT_MAX_DECODED_BYTES


def _split(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESNET_SERVE_", extra="forbid")

    model_repository: Path = Field(Path("models"), description="model repository root: NAME/VERSION/model.json")
    models: Annotated[list[str], NoDecode] = Field(default_factory=list, description="model names to load (default: all)")
    default_model: str | None = Field(None, description="model used when a request names none (default: the only/first one)")
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")

    max_batch_size: int = Field(16, ge=1, le=1024, description="largest batch one inference call takes")
    max_delay_ms: float = Field(
        10.0, ge=0, description="how long a batch waits for requests still being decoded (never when none are)"
    )
    queue_size: int = Field(256, ge=1, description="requests waiting for a work slot (max_concurrent_work) before answering 503")
    request_timeout_ms: float = Field(
        10_000, gt=0, description="deadline per request (clients may lower it with X-Request-Timeout-Ms)"
    )
    instances: int = Field(1, ge=1, le=16, description="batches run in parallel per model")

    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="ONNX Runtime providers in order of preference (default: TensorRT, CUDA, OpenVINO, CPU as available)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="arithmetic: auto picks the fastest that passes the golden check (bf16 on OpenVINO CPUs, fp16 on TensorRT)",
    )
    precision_fallback: bool = Field(True, description="fall back to fp32 when a reduced precision fails the golden check")
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads (0: one per core, or the container's CPU limit if lower)"
    )
    inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime inter-op threads")
    preprocess_workers: int = Field(0, ge=0, description="threads decoding and preprocessing images (0: one per CPU available)")
    preprocess_processes: bool = Field(
        False, description="decode in that many worker processes instead of threads (many-core GPU servers: no GIL)"
    )
    max_concurrent_work: int = Field(
        0,
        ge=0,
        description="requests decoded, queued or running at once; others wait undecoded (0: 2 x max_batch_size x instances)",
    )
    warmup: bool = Field(True, description="run batch sizes 1, 2, 4, ... max_batch_size once at load")
    batch_padding: Literal["auto", "always", "never"] = Field(
        "auto",
        description="zero-pad batches to those warm-up sizes (auto: on GPU providers, which tune or build per input shape)",
    )
    golden_tolerance: float = Field(0.05, gt=0, description="max |dprob| on the golden inputs before a backend is refused")

    body_read_timeout_s: float = Field(
        30.0, gt=0, description="how long a request's body may take to arrive (408 beyond); no work slot is held meanwhile"
    )
    idle_timeout_s: float = Field(
        5.0, gt=0, description="close a connection that sends no request for this long (new or kept alive)"
    )
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest request body (413 beyond, refused while reading)")
    max_pixels: int = Field(40_000_000, ge=1, description="largest image in pixels, checked from the header before decoding")
    max_decoded_bytes: int = Field(
        DEFAULT_MAX_DECODED_BYTES,
        ge=1,
        description="largest image in decoded bytes (pixels x bytes per pixel), checked from the header",
    )
    large_decode_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="images decoding to more bytes than this are decoded max_large_decodes at a time"
    )
    idle_inline_decode_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="while a request is alone in the service and its model's last batch held one, baseline "
        "JPEGs decoding to at most this many bytes are decoded on the event loop, not a decoding thread (saves a "
        "thread hand-off at concurrency 1; 0: never)",
    )
    max_large_decodes: int = Field(
        1, ge=1, description="large images decoded at once (their own threads: small images never wait behind them)"
    )
    max_batch_files: int = Field(64, ge=1, description="most files in one /classify/batch request")

    poll_interval_s: float = Field(10.0, ge=0, description="how often to look for new versions (0: once, at start-up)")
    admin_token: str | None = Field(None, description="Bearer token the /admin routes require (none: open)")

    promotion_tolerance: float = Field(
        0.5,
        ge=0,
        description="a new version serves only if its evaluation top-1 is at least the serving one's minus this many points",
    )
    evaluation_timeout_s: float = Field(300.0, gt=0, description="longest a version's evaluation-set scoring may take")
    canary_percent: float = Field(
        0.0, ge=0, le=100, description="share of requests a version that passed the gate takes first (0: promoted at once)"
    )
    canary_requests: int = Field(1000, ge=1, description="images answered (both versions together) before a canary is judged")
    canary_max_s: float = Field(600.0, gt=0, description="a canary is judged after this long even with fewer requests")
    canary_max_error_increase: float = Field(
        0.01, ge=0, le=1, description="roll a canary back if its error rate exceeds the serving version's by more (fraction)"
    )
    canary_max_p99_ratio: float = Field(
        1.5, ge=1, description="roll a canary back if its p99 latency is more than this times the serving version's"
    )
    rollout_state_file: Path | None = Field(
        None, description="where promotions, pins and rollbacks are kept across restarts (default: REPOSITORY/rollouts.json)"
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long queued requests may take to finish")
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    log_level: str = Field("info", description="log level")

    @property
    def preprocess_threads(self) -> int:
        """``preprocess_workers``, or one per CPU this process may use: decoding is most of a request's CPU
        besides inference (2 threads measured best on the 2-core development machine; a GPU server has more)."""
        return self.preprocess_workers or cpus.available_cpus()

    @property
    def inference_threads(self) -> int:
        """``intra_op_threads``; when 0, ONNX Runtime's own default (one per physical core) unless a container CPU
        limit is lower: a pod limited to 2 CPUs on a 64-core node would otherwise run 64 threads, throttled."""
        limit = cpus.cgroup_cpu_limit()
        if self.intra_op_threads or limit is None or limit >= cpus.affinity_cpus():
            return self.intra_op_threads
        return limit

    @field_validator("models", "providers", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)
