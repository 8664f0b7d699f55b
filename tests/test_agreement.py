"""model_repository/agreement.py: the one comparison behind the exporter's parity check and the golden check."""

from __future__ import annotations

import numpy as np

from model_repository.agreement import compare
from model_repository.postprocess import ranked, softmax


def test_a_near_tie_may_flip_but_a_decisive_top1_may_not():
    reference = np.array([[5.0, 0.0, 0.0], [1.0, 1.02, 0.0]])  # row 0 decisive, row 1 a near-tie
    flipped_tie = np.array([[5.0, 0.0, 0.0], [1.02, 1.0, 0.0]])
    a = compare(flipped_tie, reference, "logits", decisive_margin=0.1)
    assert a.top1_agreement_pct == 50.0 and a.decisive_top1_agreement_pct == 100.0
    flipped_decisive = np.array([[0.0, 5.0, 0.0], [1.0, 1.02, 0.0]])
    assert compare(flipped_decisive, reference, "logits", 0.1).decisive_top1_agreement_pct == 0.0
    assert compare(reference, reference).max_abs_prob_diff == 0.0 and compare(reference, reference).compared == 2


def test_probabilities_are_compared_as_they_are_and_logits_through_a_softmax():
    logits = np.array([[2.0, 0.0], [0.0, 3.0]])
    shifted = logits + 7.0  # the same probabilities: a softmax does not see a shift
    assert compare(shifted, logits, "logits").max_abs_prob_diff < 1e-12
    assert compare(shifted, logits, "logits").max_abs_logit_diff == 7.0
    probs = softmax(logits)
    moved = probs + np.array([[0.01, -0.01], [0.0, 0.0]])
    assert abs(compare(moved, probs, "probabilities").max_abs_prob_diff - 0.01) < 1e-12  # no second softmax


def test_ranked_gives_a_batch_its_probabilities_and_each_row_its_classes_by_rank():
    logits = np.array([[1.0, 3.0, 3.0, -2.0], [0.0, 0.0, 0.0, 5.0]], dtype=np.float32)
    probabilities, order = ranked(logits, "logits")
    assert probabilities.dtype == np.float64 and np.allclose(probabilities, softmax(logits.astype(np.float64)))
    assert order.tolist() == [[1, 2, 0, 3], [3, 0, 1, 2]]  # ties: the lower index first
    given = np.array([[0.1, 0.6, 0.3]], dtype=np.float32)
    probabilities, order = ranked(given, "probabilities")
    assert np.array_equal(probabilities, given.astype(np.float64)) and order.tolist() == [[1, 2, 0]]
