"""Loaded models: every model in the repository at its highest version, hot-reloaded when a new one appears.

A new version is validated (schema, sha256), loaded, warmed and golden-checked off the event loop, then
swapped in with one assignment; the old version's batcher then drains, so requests already queued on it
finish there. A broken version is refused with a log line and a metric; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from model_repository import Manifest, ManifestError, list_model_names, list_versions, read_manifest, verify_files

from .backends import candidate_backends
from .batcher import BatchStats, DynamicBatcher
from .errors import NotFound
from .metrics import Metrics
from .runtime import ModelLoadError, OrtRunner, warmup_batch_sizes
from .settings import Settings

log = logging.getLogger("resnet_serve")


@dataclass
class LoadedModel:
    name: str
    version: int
    path: Path
    manifest: Manifest
    runner: OrtRunner
    batcher: DynamicBatcher
    selection: dict = field(default_factory=dict)  # chosen backend, its golden check, rejected backends
    loaded_at: float = field(default_factory=time.time)

    def describe(self) -> dict:
        m = self.manifest
        return {
            "version": self.version,
            "state": "ready",
            "arch": m.arch,
            "input_size": m.input_size,
            "num_classes": m.num_classes,
            "precision": self.runner.backend.precision,  # int8/fp16 graphs report their own
            "weights_precision": m.precision,
            "backend": self.runner.backend.label,
            "providers": self.runner.providers,
            "metrics": m.metrics,
            "golden_check": self.selection.get("golden"),
            "rejected_backends": self.selection.get("rejected", []),
            "queue_depth": self.batcher.depth,
        }


class ModelManager:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.repository = Path(settings.model_repository)
        self.live: dict[str, LoadedModel] = {}
        self.failed: dict[tuple[str, int], str] = {}  # (name, version) -> why it was refused (paths repository-relative)
        # (name, version) -> its files when it was refused: a version caught mid-copy is tried again once they change
        self._failed_files: dict[tuple[str, int], tuple] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        # The repository's model names as of the last refresh: lookups on the request path never touch the disk.
        self._repository_names: list[str] = []

    # ------------------------------------------------------------------ lookup
    def expected_names(self) -> list[str]:
        """The models this server should serve: the configured ones, else those in the repository at the last refresh."""
        return list(self.settings.models) or self._repository_names

    def default_name(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        names = self.expected_names()
        return names[0] if names else None

    def get(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        name = name or self.default_name()
        if name is None or name not in self.live:
            known = ", ".join(sorted(self.live)) or "none"
            raise NotFound(f"model {name!r} is not loaded (loaded: {known})")
        model = self.live[name]
        if version is not None and version != model.version:
            raise NotFound(f"{name} version {version} is not served (serving version {model.version})")
        return model

    def ready(self) -> bool:
        expected = self.expected_names()
        return bool(expected) and all(n in self.live for n in expected)

    # ------------------------------------------------------------------ loading
    def _load_blocking(self, name: str, version: int) -> tuple[Path, Manifest, OrtRunner, dict]:
        """Validate the files, then try each backend (fastest first) until one loads and passes the golden check."""
        path = self.repository / name / str(version)
        manifest = read_manifest(path)
        if manifest.name != name:
            raise ManifestError(f"{path}: manifest names {manifest.name!r}, directory {name!r}")
        verify_files(path, manifest)
        s = self.settings
        try:
            candidates = candidate_backends(
                s.providers, s.precision, s.precision_fallback, manifest.golden is not None, manifest.precision
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        # The golden check tolerates the graph's own drift, measured at export (int8/fp16 graphs), plus the setting.
        tolerance = s.golden_tolerance + float((manifest.parity or {}).get("max_abs_prob_diff", 0.0))
        rejected: list[str] = []
        for backend in candidates:
            try:
                runner = OrtRunner(
                    path / manifest.file, manifest, backend, s.inference_threads, s.inter_op_threads, s.max_batch_size
                )
                golden = runner.check_golden(path / manifest.golden.file, tolerance) if manifest.golden else None
            except ModelLoadError as exc:
                log.warning("%s version %d: %s", name, version, exc)
                rejected.append(str(exc))
                continue
            sizes = warmup_batch_sizes(min(s.max_batch_size, manifest.static_batch or s.max_batch_size))
            if s.batch_padding == "always" or (s.batch_padding == "auto" and backend.fixed_shapes):
                runner.pad_batches_to(sizes)
            if s.warmup:
                runner.warmup(manifest.input_size, sizes)
            return path, manifest, runner, {"backend": backend.label, "golden": golden, "rejected": rejected}
        raise ModelLoadError(f"no backend passed for {name} version {version}: {'; '.join(rejected)}")

    def _make_batcher(self, name: str, runner: OrtRunner) -> DynamicBatcher:
        s, m = self.settings, self.metrics

        def on_batch(stats: BatchStats) -> None:
            m.batch_size.labels(name).observe(stats.size)
            m.recent.batches.append((time.monotonic(), stats.size))
            m.inference.labels(name).observe(stats.inference_s)
            for wait in stats.queue_waits:
                m.queue_wait.labels(name).observe(wait)

        batcher = DynamicBatcher(
            runner,
            s.max_batch_size,
            s.max_delay_ms,
            s.instances,
            on_batch=on_batch,
            on_depth=m.queue_depth.labels(name).set,
            name=name,
        )
        batcher.start()
        return batcher

    async def load(self, name: str, version: int) -> LoadedModel:
        """Load, warm and check one version off the event loop, then make it the live one."""
        try:
            path, manifest, runner, selection = await asyncio.to_thread(self._load_blocking, name, version)
        except (ManifestError, ModelLoadError, OSError) as exc:
            self.failed[(name, version)] = self._relative(str(exc))
            self._failed_files[(name, version)] = await asyncio.to_thread(self._files_of, name, version)
            self.metrics.model_loads.labels(name, "failed").inc()
            if name in self.live:
                self.metrics.reload_failures.labels(name).inc()
            log.error("refused %s version %d: %s", name, version, exc)
            raise
        self.failed.pop((name, version), None)  # a version refused mid-copy and loaded once complete
        self._failed_files.pop((name, version), None)
        loaded = LoadedModel(name, version, path, manifest, runner, self._make_batcher(name, runner), selection)
        previous = self.live.get(name)
        self.live[name] = loaded  # the swap: new requests resolve to the new version from here on
        self.metrics.model_loads.labels(name, "ok").inc()
        self.metrics.loaded_version.labels(name).set(version)
        log.info(
            "serving %s version %d on %s (golden check %s; rejected: %s)",
            name,
            version,
            runner.backend.label,
            selection["golden"],
            selection["rejected"] or "none",
        )
        if previous is not None:
            task = asyncio.get_running_loop().create_task(self._retire(previous.batcher))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return loaded

    def _files_of(self, name: str, version: int) -> tuple:
        """(file name, size, mtime) of each file in a version directory: what changes when a copy completes."""
        directory = self.repository / name / str(version)
        try:
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file()))
        except OSError:
            return ()

    def _relative(self, message: str) -> str:
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

    async def refresh(self) -> dict[str, str]:
        """Load whatever is newer than what is served. Returns {name: what happened}."""
        async with self._lock:
            outcome: dict[str, str] = {}
            if not self.settings.models:
                self._repository_names = await asyncio.to_thread(list_model_names, self.repository)
            for name in self.expected_names():
                versions = list_versions(self.repository, name)
                if not versions:
                    outcome[name] = "no versions"
                    continue
                latest = versions[-1]
                current = self.live.get(name)
                if current is not None and current.version >= latest:
                    outcome[name] = f"serving version {current.version}"
                    continue
                if (name, latest) in self.failed:
                    if await asyncio.to_thread(self._files_of, name, latest) == self._failed_files.get((name, latest)):
                        outcome[name] = f"version {latest} refused earlier: {self.failed[(name, latest)]}"
                        continue
                    log.info("%s version %d changed since it was refused: trying it again", name, latest)
                try:
                    await self.load(name, latest)
                    outcome[name] = f"loaded version {latest}"
                except (ManifestError, ModelLoadError, OSError) as exc:
                    outcome[name] = f"refused version {latest}: {self._relative(str(exc))}"
            return outcome

    async def poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # the poller must survive anything a repository can hold
                log.exception("repository poll failed")

    async def drain_all(self, timeout_s: float) -> bool:
        results = await asyncio.gather(*(m.batcher.drain(timeout_s) for m in self.live.values()))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        return all(results)

    def pending(self) -> int:
        return sum(m.batcher.pending for m in self.live.values())

    def describe(self) -> list[dict]:
        out = []
        for name in sorted(set(self.expected_names()) | set(self.live)):
            live = self.live.get(name)
            versions = []
            for v in list_versions(self.repository, name):
                if live is not None and v == live.version:
                    versions.append(live.describe())
                elif (name, v) in self.failed:
                    versions.append({"version": v, "state": "failed", "reason": self.failed[(name, v)]})
                else:
                    versions.append({"version": v, "state": "available" if live is None or v < live.version else "loading"})
            out.append(
                {
                    "name": name,
                    "default": name == self.default_name(),
                    "serving_version": live.version if live else None,
                    "labels": live.manifest.num_classes if live else None,
                    "versions": versions,
                }
            )
        return out
