"""Score a loaded version on its model's evaluation set, and the promotion gate that compares two scores.

The images go through the service's own decoding and preprocessing and the version's chosen backend, so the
score is what clients would get. Runs in the loading thread (off the event loop), bounded by a time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from model_repository import Manifest
from model_repository.evaluation import EvaluationSet

from .imaging import image_to_input
from .runtime import ModelLoadError, OrtRunner


@dataclass(frozen=True)
class Score:
    top1: float  # percent correct on the set
    count: int
    evaluation_sha256: str  # which set: two scores compare only on the same one
    seconds: float

    def describe(self) -> dict:
        return {"top1": round(self.top1, 2), "images": self.count, "seconds": round(self.seconds, 2)}

    def summary(self) -> str:
        return f"top-1 {self.top1:.2f}% on {self.count} evaluation images"


def score(
    runner: OrtRunner, manifest: Manifest, evaluation: EvaluationSet, batch_size: int, max_pixels: int, time_limit_s: float
) -> Score:
    """Top-1 of ``runner`` on ``evaluation``, in batches of ``batch_size``; ModelLoadError past ``time_limit_s``
    or when the set's labels are not the model's (its indices would mean other classes)."""
    if evaluation.manifest.labels != manifest.labels:
        raise ModelLoadError("the evaluation set's labels differ from the model's: it cannot score this version")
    began = time.perf_counter()
    correct = 0
    for start in range(0, evaluation.manifest.count, batch_size):
        if time.perf_counter() - began > time_limit_s:
            raise ModelLoadError(
                f"evaluation did not finish within {time_limit_s:g} s ({start} of {evaluation.manifest.count} images)"
            )
        images = evaluation.images[start : start + batch_size]
        try:
            batch = np.stack([image_to_input(data, manifest.preprocess, max_pixels) for data in images])  # (n, 3, H, W)
        except Exception as exc:  # a set that cannot be decoded is the repository's fault, not the version's
            raise ModelLoadError(f"evaluation image {start}..{start + len(images) - 1} could not be decoded: {exc}") from None
        predicted = runner(batch).argmax(axis=1)  # (n,)
        correct += int((predicted == evaluation.labels[start : start + len(images)]).sum())
    count = evaluation.manifest.count
    return Score(100.0 * correct / count, count, evaluation.sha256, time.perf_counter() - began)


def gate(candidate: Score, serving: Score | None, tolerance: float) -> tuple[bool, str]:
    """(promote?, why): the candidate passes when its top-1 is at least the serving version's minus ``tolerance``
    percentage points on the same set. Without a comparable serving score there is nothing to gate against."""
    if serving is None or serving.evaluation_sha256 != candidate.evaluation_sha256:
        return True, f"{candidate.summary()} (nothing to compare with)"
    verdict = candidate.top1 >= serving.top1 - tolerance
    relation = "within" if verdict else "more than"
    return verdict, (
        f"top-1 {candidate.top1:.2f}% against the serving version's {serving.top1:.2f}% on the same {candidate.count} "
        f"evaluation images ({relation} the {tolerance:g}-point tolerance)"
    )
