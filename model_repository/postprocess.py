"""A model's output turned into probabilities by the manifest's ``output.kind``: one definition for the exporter's
parity check and the service's golden check and answers."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """(..., C) logits -> (..., C) probabilities, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def to_probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """(..., C) model output -> (..., C) probabilities: logits get a softmax, probabilities pass as they are."""
    if kind == "logits":
        return softmax(output)
    if kind == "probabilities":
        return output
    raise ValueError(f"unknown output kind {kind!r}")


def ranked(output: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) model output -> ((N, C) float64 probabilities, (N, C) class indices from most to least probable, ties
    lower index first). For a whole batch at once: per image, these numpy calls cost more than the arithmetic."""
    probabilities = to_probabilities(output.astype(np.float64), kind)
    return probabilities, np.argsort(-probabilities, axis=-1, kind="stable")
