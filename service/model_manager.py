"""Loaded models: for each model in the repository one serving version (and at most one canary), the newer
versions gated on accuracy before they take traffic (rollout rules: docs/service.md "Rollouts").

A version is validated (schema, sha256), loaded, warmed, golden-checked and scored on its model's evaluation set
off the event loop; it takes traffic by one assignment; the replaced version's batcher then drains, so requests
already queued on it finish there. A broken or worse version is refused with a log line and a metric; the serving
one keeps serving. Operator controls (promote, roll back, pin) live in ``rollout_admin.py``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_repository import (
    Manifest,
    ManifestError,
    list_model_names,
    list_versions,
    read_manifest,
    verify_files,
    version_dir,
)
from model_repository.evaluation import EvaluationSet, read_evaluation_set
from model_repository.postprocess import ranked

from .backends import select_backend
from .batcher import BatchStats, DynamicBatcher
from .errors import NotFound
from .evaluation import Score, score
from .metrics import Metrics
from .rollouts import Canary, RolloutStore
from .runtime import ModelLoadError, OrtRunner
from .settings import Settings

log = logging.getLogger("resnet_serve")
LOAD_ERRORS = (ManifestError, ModelLoadError, OSError)


@dataclass
class Prepared:
    """A version loaded, checked and scored, not taking traffic yet."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    runner: OrtRunner
    selection: dict  # chosen backend, its golden check, rejected backends
    score: Score | None  # on the model's evaluation set; None without one


@dataclass
class LoadedModel:
    name: str
    version: int
    path: Path
    manifest: Manifest
    runner: OrtRunner
    batcher: DynamicBatcher
    selection: dict = field(default_factory=dict)
    score: Score | None = None
    loaded_at: float = field(default_factory=time.time)
    counters: tuple = ()  # (answered, failed, latency) metric children for this version, set when it takes traffic

    def describe(self, state: str = "ready") -> dict:
        m = self.manifest
        return {
            "version": self.version,
            "state": state,
            "arch": m.arch,
            "input_size": m.input_size,
            "num_classes": m.num_classes,
            "precision": self.runner.backend.precision,  # int8/fp16 graphs report their own
            "weights_precision": m.precision,
            "backend": self.runner.backend.label,
            "providers": self.runner.providers,
            "metrics": m.metrics,
            "evaluation": self.score.describe() if self.score else None,
            "golden_check": self.selection.get("golden"),
            "rejected_backends": self.selection.get("rejected", []),
            "queue_depth": self.batcher.depth,
        }


@dataclass
class Decision:
    """Why a version does not serve: ``failed`` (does not load or check), ``refused`` (the accuracy gate) or
    ``held`` (passed the gate while the model is pinned). Tried again when its files or the serving version change."""

    state: str
    reason: str
    files: tuple
    against: int | None = None  # the serving version it was judged against
    details: dict = field(default_factory=dict)


class ModelManager:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.repository = Path(settings.model_repository)
        self.live: dict[str, LoadedModel] = {}  # name -> the serving version
        self.canaries: dict[str, Canary] = {}  # name -> a candidate taking a share of the traffic
        self.decisions: dict[tuple[str, int], Decision] = {}  # (name, version) -> why it does not serve
        self.rollouts = RolloutStore(settings.rollout_state_file or self.repository / "rollouts.json")
        self.lock = asyncio.Lock()  # one change of what serves at a time: refresh, canary ends, admin calls
        self._tasks: set[asyncio.Task] = set()  # retiring batchers, canary judgements
        self.on_canary_due = None  # async (name) -> None: judges a canary (set by the rollout controller)
        # The repository's model names as of the last refresh: lookups on the request path never touch the disk.
        self._repository_names: list[str] = []

    # ------------------------------------------------------------------ lookup (the request path)
    def expected_names(self) -> list[str]:
        """The models this server should serve: the configured ones, else those in the repository at the last refresh."""
        return list(self.settings.models) or self._repository_names

    def default_name(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        names = self.expected_names()
        return names[0] if names else None

    def get(self, name: str | None = None, version: int | None = None, key: str | None = None) -> LoadedModel:
        """The version that answers: the one named, else the canary for the requests its share takes (by ``key``,
        the request id), else the serving one."""
        name = name or self.default_name()
        model = self.live.get(name) if name is not None else None
        if model is None:
            known = ", ".join(sorted(self.live)) or "none"
            raise NotFound(f"model {name!r} is not loaded (loaded: {known})")
        canary = self.canaries.get(name)
        if canary is not None and (version == canary.model.version or (version is None and canary.takes(key))):
            return canary.model
        if version is not None and version != model.version:
            raise NotFound(f"{name} version {version} is not served (serving version {model.version})")
        return model

    def observe(self, model: LoadedModel, ok: bool, seconds: float) -> None:
        """One image answered (or failed by the model: not bad input) by ``model``: per-version metrics, the canary."""
        answered, failed, latency = model.counters
        if ok:
            answered.inc()
            latency.observe(seconds)
        else:
            failed.inc()
        canary = self.canaries.get(model.name)
        if canary is not None:
            canary.record(model.version, ok, seconds)
            if not canary.concluding and canary.due():
                canary.concluding = True
                self._spawn(self.on_canary_due(model.name))

    def ready(self) -> bool:
        expected = self.expected_names()
        return bool(expected) and all(n in self.live for n in expected)

    # ------------------------------------------------------------------ loading
    def _load_blocking(self, name: str, version: int, evaluation: EvaluationSet | None) -> Prepared:
        """Validate the files, take the fastest backend that passes the golden check (``backends.select_backend``),
        and score it on the evaluation set."""
        path = version_dir(self.repository, name, version)
        manifest = read_manifest(path)
        if manifest.name != name:
            raise ManifestError(f"{path}: manifest names {manifest.name!r}, directory {name!r}")
        verify_files(path, manifest)
        runner, selection = select_backend(path, manifest, self.settings)
        scored = self.score(runner, manifest, evaluation) if evaluation is not None else None
        return Prepared(name, version, path, manifest, runner, selection, scored)

    def score(self, runner: OrtRunner, manifest: Manifest, evaluation: EvaluationSet) -> Score:
        """A version's top-1 on the evaluation set, in batches of max_batch_size, within evaluation_timeout_s;
        logged. Blocking: call it off the event loop."""
        s = self.settings
        scored = score(runner, manifest, evaluation, s.max_batch_size, s.max_pixels, s.evaluation_timeout_s)
        log.info("%s version %d: %s", manifest.name, manifest.version, scored.summary())
        return scored

    async def prepare(self, name: str, version: int, evaluation: EvaluationSet | None) -> Prepared:
        """Load, check and score one version off the event loop; a failure is recorded (state ``failed``)."""
        try:
            return await asyncio.to_thread(self._load_blocking, name, version, evaluation)
        except LOAD_ERRORS as exc:
            files = await asyncio.to_thread(self.files_of, name, version)
            self.decisions[(name, version)] = Decision("failed", self.relative(str(exc)), files)
            self.metrics.model_loads.labels(name, "failed").inc()
            if name in self.live:
                self.metrics.reload_failures.labels(name).inc()
            log.error("refused %s version %d: %s", name, version, exc)
            raise

    async def evaluation_set(self, name: str) -> EvaluationSet | None:
        """The model's evaluation set; an unreadable one is a load error of every version that would use it."""
        try:
            return await asyncio.to_thread(read_evaluation_set, self.repository, name)
        except ManifestError as exc:
            raise ModelLoadError(self.relative(str(exc))) from None

    def take_traffic(self, prepared: Prepared) -> LoadedModel:
        """A prepared version with its own batcher, ready to answer (as the serving version or a canary)."""
        self.decisions.pop((prepared.name, prepared.version), None)
        p, m = prepared, self.metrics
        batcher = self._make_batcher(p.name, p.runner, p.manifest.output.kind)
        loaded = LoadedModel(p.name, p.version, p.path, p.manifest, p.runner, batcher, p.selection, p.score)
        labels = (p.name, str(p.version))
        loaded.counters = (
            m.version_requests.labels(*labels, "ok"),
            m.version_requests.labels(*labels, "error"),
            m.version_latency.labels(*labels),
        )
        return loaded

    def swap_in(self, loaded: LoadedModel) -> None:
        """Make ``loaded`` the serving version; the one it replaces drains and is let go."""
        name = loaded.name
        previous = self.live.get(name)
        self.live[name] = loaded  # the swap: new requests resolve to the new version from here on
        self.metrics.model_loads.labels(name, "ok").inc()
        self.metrics.loaded_version.labels(name).set(loaded.version)
        s = loaded.selection
        log.info(
            "serving %s version %d on %s (golden check %s; rejected: %s)",
            name, loaded.version, loaded.runner.backend.label, s["golden"], s["rejected"] or "none",
        )  # fmt: skip
        if previous is not None:
            self.retire(previous)

    def retire(self, model: LoadedModel) -> None:
        self._spawn(self._retire(model.batcher))

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _make_batcher(self, name: str, runner: OrtRunner, output_kind: str) -> DynamicBatcher:
        s, m = self.settings, self.metrics
        # The metric children once per batcher: labels() takes a lock and a dict lookup on every call.
        batch_size, inference, queue_wait = m.batch_size.labels(name), m.inference.labels(name), m.queue_wait.labels(name)

        def on_batch(stats: BatchStats) -> None:
            batch_size.observe(stats.size)
            m.recent.batches.append((time.monotonic(), stats.size))
            inference.observe(stats.inference_s)
            for wait in stats.queue_waits:
                queue_wait.observe(wait)

        def run(batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            """(N, 3, H, W) -> per image ((C,) probabilities, (C,) classes by rank), post-processed here, in the
            inference thread, for the whole batch at once rather than image by image on the event loop."""
            probabilities, order = ranked(runner(batch), output_kind)
            return list(zip(probabilities, order, strict=True))

        depth = m.queue_depth.labels(name).set
        batcher = DynamicBatcher(run, s.max_batch_size, s.max_delay_ms, s.instances, on_batch=on_batch, on_depth=depth, name=name)
        batcher.start()
        return batcher

    def files_of(self, name: str, version: int) -> tuple:
        """(file name, size, mtime) of each file in a version directory: what changes when a copy completes."""
        directory = version_dir(self.repository, name, version)
        try:
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file()))
        except OSError:
            return ()

    def relative(self, message: str) -> str:
        """A refusal's reason with paths shown relative to the repository (clients of /v1/models see it)."""
        for root in {str(self.repository.resolve()), str(self.repository)}:
            message = message.replace(root.rstrip("/") + "/", "")
        return message

    async def _retire(self, batcher: DynamicBatcher) -> None:
        """Let the replaced version's queued requests finish, then let the collector reach what it leaves behind:
        start-up froze every object then alive out of the collector's generations (app.py), the replaced version's
        among them, so any reference cycle in it would otherwise never be freed."""
        await batcher.drain(self.settings.drain_timeout_s)
        del batcher
        if gc.get_freeze_count():
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    async def rescan(self) -> None:
        """The repository's model names, when the settings name none (served: every model in the repository)."""
        if not self.settings.models:
            self._repository_names = await asyncio.to_thread(list_model_names, self.repository)

    async def drain_all(self, timeout_s: float) -> bool:
        batchers = [m.batcher for m in self.live.values()] + [c.model.batcher for c in self.canaries.values()]
        results = await asyncio.gather(*(b.drain(timeout_s) for b in batchers))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return all(results)

    def names(self) -> list[str]:
        """Every model this server serves or should: the expected ones and any still loaded."""
        return sorted(set(self.expected_names()) | set(self.live))

    def describe(self) -> list[dict]:
        return [self.describe_model(name) for name in self.names()]

    def describe_model(self, name: str) -> dict:
        """One model as ``/v1/models/{name}`` shows it: its versions on disk with their states, its rollout state."""
        live, canary, record = self.live.get(name), self.canaries.get(name), self.rollouts.of(name)
        versions = []
        for v in list_versions(self.repository, name):
            decision = self.decisions.get((name, v))
            if live is not None and v == live.version:
                versions.append(live.describe())
            elif canary is not None and v == canary.model.version:
                versions.append(canary.model.describe("canary"))
            elif decision is not None:
                versions.append({"version": v, "state": decision.state, "reason": decision.reason, **decision.details})
            elif v in record.held_back:
                versions.append({"version": v, "state": "held_back", "reason": record.held_back[v]})
            else:
                versions.append({"version": v, "state": "available" if live is None or v < live.version else "loading"})
        rollout = {
            "pinned": record.pinned,
            "canary_percent": self.settings.canary_percent if record.canary_percent is None else record.canary_percent,
            "canary": canary.describe() if canary else None,
            "history": record.history,
        }
        return {
            "name": name,
            "default": name == self.default_name(),
            "serving_version": live.version if live else None,
            "labels": live.manifest.num_classes if live else None,
            "versions": versions,
            "rollout": rollout,
        }
