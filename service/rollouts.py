"""Rollout state: which version serves each model, pins, canary shares and versions held back, kept in one small
JSON file (``rollouts.json`` in the repository by default) so a restart comes back to the same decisions; and the
canary, which splits a model's traffic by request id and judges the candidate against the serving version.

The file is written only when a decision is made (a gate, a canary's end, an admin call), by write-then-rename.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import StateNotSaved

log = logging.getLogger("resnet_serve")

HISTORY = 10  # serving versions remembered per model: how far repeated rollbacks can go


class ModelRollout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serving: int | None = None  # the version a restart serves first
    history: list[int] = Field(default_factory=list)  # serving versions, oldest first; the last is ``serving``
    pinned: int | None = None  # newer versions are loaded and gated but take no traffic
    canary_percent: float | None = Field(None, ge=0, le=100)  # None: the setting's
    held_back: dict[int, str] = Field(default_factory=dict)  # version -> why it is never promoted on its own

    def serve(self, version: int) -> None:
        if self.serving != version:
            self.history = [*[v for v in self.history if v != version][-(HISTORY - 1) :], version]
        self.serving = version
        self.held_back.pop(version, None)


class RolloutFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = 1
    models: dict[str, ModelRollout] = Field(default_factory=dict)


class RolloutStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = self._read()

    def _read(self) -> RolloutFile:
        try:
            return RolloutFile.model_validate(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return RolloutFile()
        except (OSError, ValueError, ValidationError) as exc:  # a hand-edited or damaged file: say so, start afresh
            log.error("ignoring rollout state %s: %s", self.path, exc)
            return RolloutFile()

    def of(self, name: str) -> ModelRollout:
        """This model's record (a copy: change it, then ``save`` it; nothing changes if saving fails)."""
        return self.state.models.get(name, ModelRollout()).model_copy(deep=True)

    def save(self, name: str, record: ModelRollout) -> None:
        """Write the whole file with ``record`` in one rename; StateNotSaved (and no change) if that fails."""
        updated = RolloutFile(models={**self.state.models, name: record})
        try:
            fd, staged = tempfile.mkstemp(prefix=".rollouts-", dir=self.path.parent)
            with os.fdopen(fd, "w") as fh:
                fh.write(updated.model_dump_json(indent=2) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(staged, self.path)
        except OSError as exc:
            raise StateNotSaved(f"the rollout state could not be written to {self.path.name}: {exc.strerror or exc}") from None
        self.state = updated


def canary_bucket(key: str) -> float:
    """A request id's place in [0, 100): the same id always lands on the same version (a retry included)."""
    return (zlib.crc32(key.encode()) % 10_000) / 100


@dataclass
class Arm:
    """What one version answered during a canary."""

    answered: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per answered image

    @property
    def error_rate(self) -> float:
        return self.errors / self.answered if self.answered else 0.0

    def p99(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def describe(self) -> dict:
        p99 = self.p99()
        return {"answered": self.answered, "errors": self.errors, "p99_ms": None if p99 is None else round(1000 * p99, 3)}


MIN_LATENCY_SAMPLES = 20  # fewer answers on either side: p99 is not compared (one slow image would decide)


@dataclass
class Canary:
    """A candidate that passed the gate taking ``percent`` of its model's requests (chosen by request id) until
    ``requests`` images are answered by both versions together or ``max_s`` seconds pass; then it is judged."""

    model: object  # the candidate's LoadedModel (not yet live)
    serving_version: int
    percent: float
    requests: int
    max_s: float
    started: float = field(default_factory=time.monotonic)
    candidate: Arm = field(default_factory=Arm)
    serving: Arm = field(default_factory=Arm)
    concluding: bool = False  # a judgement is under way: record nothing more as due

    def takes(self, key: str | None) -> bool:
        return key is not None and canary_bucket(key) < self.percent

    def record(self, version: int, ok: bool, seconds: float) -> None:
        arm = self.candidate if version == self.model.version else self.serving if version == self.serving_version else None
        if arm is None:
            return
        arm.answered += 1
        if ok:
            arm.latencies.append(seconds)
        else:
            arm.errors += 1

    def due(self) -> bool:
        return self.candidate.answered + self.serving.answered >= self.requests or time.monotonic() - self.started >= self.max_s

    def verdict(self, max_error_increase: float, max_p99_ratio: float) -> tuple[bool, str]:
        """(promote?, why): rolled back when the candidate's error rate exceeds the serving version's by more than
        ``max_error_increase`` (a fraction), or its p99 latency is over ``max_p99_ratio`` times the serving one's."""
        c, s = self.candidate, self.serving
        facts = (
            f"canary {c.answered} answers, {c.errors} errors, p99 {c.describe()['p99_ms']} ms; "
            f"serving {s.answered} answers, {s.errors} errors, p99 {s.describe()['p99_ms']} ms"
        )
        if c.error_rate > s.error_rate + max_error_increase:
            return False, f"error rate {100 * c.error_rate:.2f}% against {100 * s.error_rate:.2f}% ({facts})"
        cp, sp = c.p99(), s.p99()
        enough = len(c.latencies) >= MIN_LATENCY_SAMPLES and len(s.latencies) >= MIN_LATENCY_SAMPLES
        if enough and cp is not None and sp is not None and cp > max_p99_ratio * sp:
            return False, f"p99 {1000 * cp:.2f} ms, over {max_p99_ratio:g}x the serving {1000 * sp:.2f} ms ({facts})"
        return True, facts

    def describe(self) -> dict:
        return {
            "version": self.model.version,
            "percent": self.percent,
            "requests": self.requests,
            "max_s": self.max_s,
            "running_s": round(time.monotonic() - self.started, 1),
            "candidate": self.candidate.describe(),
            "serving": self.serving.describe(),
        }
