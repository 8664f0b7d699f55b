"""The manifest's ``output.kind == "logits"`` turned into probabilities: one definition for the exporter's parity
check and the service's golden check and answers."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """(..., C) logits -> (..., C) probabilities, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
