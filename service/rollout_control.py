"""What serves: the rollout rules applied on every refresh (start-up, the poller, ``/admin/reload``), the end of a
canary, and the operator's controls (promote, roll back, pin, unpin, canary share) behind ``/admin/models``.

Rules (docs/service.md "Rollouts"): a model serves its recorded version (rollouts.json), else its newest. A newer
version, not held back, is loaded, golden-checked and scored on the model's evaluation set; it serves only if its
top-1 is at least the serving version's minus ``promotion_tolerance``: first as a canary when ``canary_percent``
is set, and not at all while the model is pinned (it is then ``held``).
"""

from __future__ import annotations

import asyncio
import logging

from model_repository import list_versions

from .errors import Conflict, NotFound, StateNotSaved
from .evaluation import gate
from .model_manager import LOAD_ERRORS, Decision, LoadedModel, ModelManager
from .rollouts import Canary, ModelRollout

log = logging.getLogger("resnet_serve")


class RolloutController:
    def __init__(self, models: ModelManager) -> None:
        self.models, self.settings, self.metrics = models, models.settings, models.metrics
        models.on_canary_due = self._conclude_when_due
        self._deferred: set[str] = set()  # models with a newer version start-up left for the poller to gate

    # ------------------------------------------------------------------ automatic: refresh, gate, canary
    async def refresh(self, candidates: bool = True, rescan: bool = True) -> dict[str, str]:
        """Serve each model, then gate what is newer unless ``candidates`` is false (start-up: readiness does not
        wait for the gate). ``rescan``: list the repository's models again. Returns {name: what happened}."""
        async with self.models.lock:
            if rescan:
                await self.models.rescan()
            return {name: await self._refresh_model(name, candidates) for name in self.models.expected_names()}

    async def poll(self, interval_s: float) -> None:
        """Gate what start-up left for later, then refresh every ``interval_s`` (0: never again)."""
        if self._deferred:
            await self._poll_round(rescan=False)
            self._deferred.clear()
        while interval_s > 0:
            await asyncio.sleep(interval_s)
            await self._poll_round(rescan=True)

    async def _poll_round(self, rescan: bool) -> None:
        try:
            await self.refresh(rescan=rescan)
        except Exception:  # the poller must survive anything a repository can hold
            log.exception("repository poll failed")

    async def _refresh_model(self, name: str, candidates: bool) -> str:
        m = self.models
        versions = await asyncio.to_thread(list_versions, m.repository, name)
        if not versions:
            return "no versions"
        record = m.rollouts.of(name)
        current, loaded = m.live.get(name), ""
        if current is None:  # start-up, or nothing could load before: the recorded version, else the newest
            eligible = [v for v in versions if v not in record.held_back] or versions
            first = record.serving if record.serving in versions else eligible[-1]
            if await self._decided_unchanged(name, first, None):
                return f"version {first} refused earlier: {m.decisions[(name, first)].reason}"
            try:
                m.swap_in(m.take_traffic(await m.prepare(name, first, await m.evaluation_set(name))))
            except LOAD_ERRORS as exc:
                return f"refused version {first}: {m.relative(str(exc))}"
            current, loaded = m.live[name], f"loaded version {first}"
        if name in m.canaries:
            canary = m.canaries[name]
            return self._conclude(name) if canary.due() else f"canary version {canary.model.version} running"
        newer = [v for v in versions if v > current.version and v not in record.held_back]
        serving = loaded or f"serving version {current.version}"
        if not newer:
            return serving
        if not candidates:  # start-up: readiness does not wait; the poller's first round, right after, gates it
            self._deferred.add(name)
            return f"{serving}; version {newer[-1]} is gated next"
        try:
            outcome = await self._consider(name, newer[-1])
        except LOAD_ERRORS as exc:
            outcome = f"refused version {newer[-1]}: {m.relative(str(exc))}"
        return f"{loaded}; {outcome}" if loaded else outcome

    async def _decided_unchanged(self, name: str, version: int, against: int | None) -> bool:
        """True when ``version`` failed, was refused or held, and neither its files nor the serving version changed."""
        decision = self.models.decisions.get((name, version))
        if decision is None:
            return False
        files = await asyncio.to_thread(self.models.files_of, name, version)
        if decision.files == files and (decision.state == "failed" or decision.against == against):
            return True
        log.info("%s version %d changed since it was %s: trying it again", name, version, decision.state)
        return False

    async def _consider(self, name: str, version: int) -> str:
        """Gate a newer version against the serving one; then it serves, starts a canary, or is refused or held."""
        m, s = self.models, self.settings
        current, record = m.live[name], m.rollouts.of(name)
        if await self._decided_unchanged(name, version, current.version):
            decision = m.decisions[(name, version)]
            said = {"failed": "refused"}.get(decision.state, decision.state)  # a broken version: "refused" as ever
            return f"version {version} {said} earlier: {decision.reason}"
        evaluation = await m.evaluation_set(name)
        if evaluation is not None and (current.score is None or current.score.evaluation_sha256 != evaluation.sha256):
            # a new evaluation set: score the serving version on it too, so both are judged on the same images
            current.score = await asyncio.to_thread(m.score, current.runner, current.manifest, evaluation)
        prepared = await m.prepare(name, version, evaluation)
        if prepared.score is None:
            passed, why = True, "no evaluation set: promoted without an accuracy gate"
        else:
            passed, why = gate(prepared.score, current.score, s.promotion_tolerance)
        record.serve(current.version)  # kept, so a restart serves it (and gates this version again), never this one ungated
        if not passed or record.pinned is not None:
            state = "refused" if not passed else "held"
            reason = why if not passed else f"passed the gate ({why}); {name} is pinned to version {record.pinned}"
            files = await asyncio.to_thread(m.files_of, name, version)
            scores = {
                "top1": prepared.score.top1 if prepared.score else None,
                "serving_top1": current.score.top1 if current.score else None,
            }
            m.decisions[(name, version)] = Decision(state, reason, files, current.version, scores)
            self._save_automatic(name, record)
            self.metrics.promotions.labels(name, state).inc()
            (log.warning if state == "refused" else log.info)("%s %s version %d: %s", state, name, version, reason)
            return f"{state} version {version}: {reason}"
        percent = s.canary_percent if record.canary_percent is None else record.canary_percent
        loaded = m.take_traffic(prepared)
        if percent > 0:
            m.canaries[name] = Canary(loaded, current.version, percent, s.canary_requests, s.canary_max_s)
            self._save_automatic(name, record)
            self.metrics.promotions.labels(name, "canary").inc()
            log.info("canary %s version %d on %g%% of requests: %s", name, version, percent, why)
            return f"canary version {version} on {percent:g}% of requests: {why}"
        record.serve(version)
        self._save_automatic(name, record)
        m.swap_in(loaded)
        self.metrics.promotions.labels(name, "promoted").inc()
        log.info("promoted %s version %d: %s", name, version, why)
        return f"promoted version {version}: {why}" if prepared.score else f"loaded version {version}"  # as before gates

    def _save_automatic(self, name: str, record: ModelRollout) -> None:
        """An automatic decision goes on even if the rollout file cannot be written (a read-only repository): warn."""
        try:
            self.models.rollouts.save(name, record)
        except StateNotSaved as exc:
            log.warning("%s: %s", name, exc.message)

    async def _conclude_when_due(self, name: str) -> None:
        async with self.models.lock:
            if name in self.models.canaries:
                self._conclude(name)

    def _conclude(self, name: str) -> str:
        """Judge a due canary: it serves, or is rolled back (held back: never promoted on its own again)."""
        m, s = self.models, self.settings
        canary = m.canaries.pop(name)
        model, record = canary.model, m.rollouts.of(name)
        promote, why = canary.verdict(s.canary_max_error_increase, s.canary_max_p99_ratio)
        if promote:
            record.serve(model.version)
            self._save_automatic(name, record)
            m.swap_in(model)
        else:
            record.held_back[model.version] = f"canary rolled back: {why}"
            self._save_automatic(name, record)
            m.retire(model)
        outcome = "promoted" if promote else "rolled_back"
        self.metrics.promotions.labels(name, outcome).inc()
        log.info("canary %s version %d %s: %s", name, model.version, outcome.replace("_", " "), why)
        return f"canary version {model.version} {outcome.replace('_', ' ')}: {why}"

    # ------------------------------------------------------------------ the operator's controls (/admin/models)
    async def promote(self, name: str, version: int) -> str:
        """Serve ``version`` now, past the gate and any canary (an operator's decision); newer versions on disk are
        held back, so the poller does not move past it on its own."""
        async with self.models.lock:
            record = self._record_of(name)
            self._check_on_disk(name, version)
            message = await self._serve_now(name, version, record, hold_newer=True, why="promoted by an operator")
            self.metrics.promotions.labels(name, "promoted").inc()
            return message

    async def rollback(self, name: str) -> str:
        """End a running canary; else serve the version that served before this one (the current one is held back)."""
        async with self.models.lock:
            m, record = self.models, self._record_of(name)
            if name in m.canaries:
                canary = m.canaries[name]
                record.held_back[canary.model.version] = "rolled back by an operator during its canary"
                m.rollouts.save(name, record)
                m.retire(m.canaries.pop(name).model)
                message = f"canary version {canary.model.version} rolled back; version {m.live[name].version} serves"
            else:
                current = m.live[name].version
                on_disk = set(list_versions(m.repository, name))
                earlier = [v for v in record.history[:-1] if v in on_disk and v != current]
                if not earlier:
                    raise Conflict(f"{name} has no earlier serving version to roll back to (history: {record.history})")
                target = earlier[-1]
                record.history = record.history[: record.history.index(target) + 1]
                record.held_back[current] = "rolled back by an operator"
                message = await self._serve_now(name, target, record, hold_newer=False, why=f"rolled back from version {current}")
            self.metrics.promotions.labels(name, "rolled_back").inc()
            log.info("%s: %s", name, message)
            return message

    async def pin(self, name: str, version: int | None) -> str:
        """Keep ``version`` (default: the serving one) serving: newer versions are gated but take no traffic."""
        async with self.models.lock:
            m, record = self.models, self._record_of(name)
            version = m.live[name].version if version is None else version
            self._check_on_disk(name, version)
            record.pinned = version
            if version != m.live[name].version or name in m.canaries:
                await self._serve_now(name, version, record, hold_newer=False, why="pinned by an operator")
            else:
                m.rollouts.save(name, record)
            log.info("pinned %s to version %d", name, version)
            return f"pinned to version {version}"

    async def unpin(self, name: str) -> str:
        """Release a pin; the newest version not held back is gated (and may serve) at once."""
        async with self.models.lock:
            m, record = self.models, self._record_of(name)
            record.pinned = None
            m.rollouts.save(name, record)
            for key in [k for k, d in m.decisions.items() if k[0] == name and d.state == "held"]:
                del m.decisions[key]
            log.info("unpinned %s", name)
            return f"unpinned; {await self._refresh_model(name, True)}"

    async def set_canary(self, name: str, percent: float | None) -> str:
        """The share of requests this model's next gated version takes first (None: the ``canary_percent`` setting)."""
        async with self.models.lock:
            record = self._record_of(name)
            record.canary_percent = percent
            self.models.rollouts.save(name, record)
            shown = self.settings.canary_percent if percent is None else percent
            return f"the next version of {name} takes {shown:g}% of requests first" if shown else f"{name}: no canary"

    def _record_of(self, name: str) -> ModelRollout:
        if name not in self.models.live:
            raise NotFound(f"model {name!r} is not loaded")
        record = self.models.rollouts.of(name)
        if record.serving != self.models.live[name].version:  # never recorded, or the recorded version was gone
            record.serve(self.models.live[name].version)
        return record

    def _check_on_disk(self, name: str, version: int) -> None:
        if version not in list_versions(self.models.repository, name):
            raise NotFound(f"{name} has no version {version}")

    async def _serve_now(self, name: str, version: int, record: ModelRollout, hold_newer: bool, why: str) -> str:
        """Make ``version`` serve (loading it unless it is the canary or already serving), ending any canary, and
        save ``record`` first: if it cannot be saved (StateNotSaved) nothing changes."""
        m = self.models
        canary = m.canaries.get(name)
        if version == m.live[name].version:
            loaded: LoadedModel | None = None
        elif canary is not None and version == canary.model.version:
            loaded = canary.model
        else:
            try:
                loaded = m.take_traffic(await m.prepare(name, version, await m.evaluation_set(name)))
            except LOAD_ERRORS as exc:
                raise Conflict(f"{name} version {version} cannot serve: {m.relative(str(exc))}") from None
        if hold_newer:
            for v in list_versions(m.repository, name):
                if v > version:
                    record.held_back.setdefault(v, f"passed over: version {version} {why}")
        record.serve(version)
        try:
            m.rollouts.save(name, record)
        except Exception:
            if loaded is not None and loaded is not (canary and canary.model):
                m.retire(loaded)
            raise
        if canary is not None:
            m.canaries.pop(name)
            if loaded is not canary.model:
                m.retire(canary.model)
        if loaded is not None:
            m.swap_in(loaded)
        return f"version {version} serves ({why})"
