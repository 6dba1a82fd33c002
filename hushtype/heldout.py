"""The held-out users' windows a benchmark scores every arm on, and the spread of a gap between arms.

One user's windows are correlated, so ``gap_interval`` resamples held-out *users* with replacement (a
paired bootstrap: every arm is re-scored on the same draw of users) rather than windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from keyboard_sim.dataset import FederatedData
from models.data import Examples
from models.metrics import next_word_metrics
from models.train import predict_topk

__all__ = ["HeldOut", "gap_interval"]


@dataclass
class HeldOut:
    """Held-out windows (``windows``) and the held-out user each comes from (``users``, 0..n_users-1)."""

    windows: Examples
    users: np.ndarray
    n_users: int

    @classmethod
    def sample(cls, data: FederatedData, max_windows: int | None, seed: int) -> HeldOut:
        """The seeded subset of ``data.heldout`` the server scores (``server_app.heldout_indices``)."""
        from server.server_app import heldout_indices

        sizes = [len(u.train) + len(u.later) for u in data.heldout_users]  # data.heldout's order
        users = np.repeat(np.arange(len(sizes)), sizes)
        idx = heldout_indices(len(users), max_windows, seed)
        heldout = data.heldout
        return cls(Examples(heldout.x[idx], heldout.y[idx]), users[idx], len(sizes))

    def __len__(self) -> int:
        return len(self.windows)

    def score(self, model: nn.Module, unk_id: int = 0) -> dict:
        """``next_word_metrics`` of ``model``, plus per-user sums (``by_user``) for the spread."""
        logp, topk = predict_topk(model, self.windows, k=3)
        y = self.windows.y
        known = y != unk_id
        hit1 = (topk[:, 0] == y) & known
        per_user = {
            "hits": hit1,  # top-1 hits on known targets (what top1 counts)
            "known": known,
            "nll": -logp,  # what loss averages, over every target
            "windows": np.ones(len(y)),
        }
        by_user = {k: np.bincount(self.users, weights=v, minlength=self.n_users) for k, v in per_user.items()}
        return {**next_word_metrics(y, topk, logp, unk_id), "by_user": by_user}


def gap_interval(
    x: dict, public: dict, central: dict, metric: str = "top1", draws: int = 2000, seed: int = 0
) -> list[float] | None:
    """95% interval of the gap closed, ``(x - public) / (central - public)`` in ``metric`` ("top1" or
    "loss"), over ``draws`` resamplings of the held-out users; arms are ``HeldOut.score`` results.
    Resamples where central ties public (no gap to close) are left out; ``None`` if every one ties."""
    num, den = {"top1": ("hits", "known"), "loss": ("nll", "windows")}[metric]
    n_users = len(public["by_user"][den])
    counts = np.random.default_rng(seed).multinomial(n_users, np.full(n_users, 1.0 / n_users), size=draws)

    def value(arm: dict) -> np.ndarray:
        return counts @ arm["by_user"][num] / (counts @ arm["by_user"][den])

    gap_to_close = value(central) - value(public)
    defined = gap_to_close != 0
    if not defined.any():
        return None
    gaps = (value(x) - value(public))[defined] / gap_to_close[defined]
    return [float(v) for v in np.percentile(gaps, [2.5, 97.5])]
