"""How close a model's outputs are to a reference: one comparison for the exporter's parity check (ONNX Runtime
against PyTorch) and the service's golden check (a backend against the exporter's fp32 logits).

Both compare probabilities (the manifest's output kind decides whether a softmax applies), and both judge top-1
agreement only where the reference is *decisive*: where its top-1 leads the runner-up by more than a margin, since
a near-tie may flip legitimately under reduced precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .postprocess import to_probabilities


@dataclass(frozen=True)
class Agreement:
    compared: int  # rows
    max_abs_logit_diff: float  # of the raw outputs
    max_abs_prob_diff: float
    top1_agreement_pct: float  # over every row
    decisive_top1_agreement_pct: float  # over the rows where the reference's top-1 leads by > decisive_margin
    decisive_margin: float


def compare(output: np.ndarray, reference: np.ndarray, kind: str = "logits", decisive_margin: float = 0.1) -> Agreement:
    """(N, C) outputs against (N, C) reference outputs of the same kind (``logits`` or ``probabilities``)."""
    output, reference = output.astype(np.float64), reference.astype(np.float64)
    probs, ref_probs = to_probabilities(output, kind), to_probabilities(reference, kind)
    agree = output.argmax(1) == reference.argmax(1)  # (N,)
    top2 = np.sort(ref_probs, axis=1)[:, -2:]  # (N, 2): runner-up, top-1
    decisive = (top2[:, 1] - top2[:, 0]) > decisive_margin
    return Agreement(
        compared=len(output),
        max_abs_logit_diff=float(np.abs(output - reference).max()),
        max_abs_prob_diff=float(np.abs(probs - ref_probs).max()),
        top1_agreement_pct=float(100.0 * agree.mean()),
        decisive_top1_agreement_pct=float(100.0 * agree[decisive].mean()) if decisive.any() else 100.0,
        decisive_margin=decisive_margin,
    )
