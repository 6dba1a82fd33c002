"""Next-word metrics, defined once so every model is scored the same way.

Which targets count: every word of every held-out sentence (``<s>`` is context padding, never a
target; there is no end-of-sentence target). Predictions never include ``<unk>`` or ``<s>``
(a keyboard cannot suggest them). Then:

- ``top1`` / ``top3``: accuracy over in-vocabulary targets (``<unk>`` targets excluded).
- ``top1_all`` / ``top3_all``: accuracy over all targets, an ``<unk>`` target always a miss.
- ``perplexity``: exp of the mean negative log-likelihood over all targets, ``<unk>`` a class of
  its own (closed vocabulary), so only models over the same vocabulary are comparable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["next_word_metrics"]


def next_word_metrics(target: np.ndarray, topk: np.ndarray, log_prob: np.ndarray, unk_id: int) -> dict:
    """Metrics from targets (n,), top-k predictions (n, >=3) and log P(target) (n,)."""
    if len(target) == 0:
        raise ValueError("no targets to score")
    hit1 = topk[:, 0] == target
    hit3 = (topk[:, :3] == target[:, None]).any(axis=1)
    known = target != unk_id
    return {
        "top1": float(hit1[known].mean()) if known.any() else 0.0,
        "top3": float(hit3[known].mean()) if known.any() else 0.0,
        "top1_all": float(hit1.mean()),
        "top3_all": float(hit3.mean()),
        "perplexity": float(np.exp(-np.mean(log_prob))),
        "loss": float(-np.mean(log_prob)),
        "targets": int(len(target)),
        "targets_known": int(known.sum()),
    }
