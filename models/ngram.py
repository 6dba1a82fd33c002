"""Baseline: an interpolated Kneser-Ney trigram LM over the same vocabulary ids.

Chen & Goodman 1998 ("An Empirical Study of Smoothing Techniques for Language Modeling"), the
interpolated variant with one absolute discount D per order:

    P(w | u v) = max(c(u v w) - D, 0) / c(u v .) + D N1+(u v .) / c(u v .) * P(w | v)
    P(w | v)   = max(N1+(. v w) - D, 0) / N1+(. v .) + D N1+(v .) / N1+(. v .) * P_cont(w)
    P_cont(w)  = N1+(. w) / N1+(. .)

where N1+(. v w) counts distinct left neighbours (continuation counts). A history never seen
falls back to the next order whole. Trained on exactly the windows the NPLM trains on (the
last two context ids of each example), so the comparison is like for like.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from models.data import Examples

__all__ = ["KneserNeyTrigram"]


class KneserNeyTrigram:
    """Interpolated Kneser-Ney trigram; ``distribution(u, v)`` is a dense (V,) probability vector."""

    def __init__(self, vocab_size: int, discount: float = 0.75) -> None:
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        self.vocab_size = vocab_size
        self.discount = discount
        self._tri: dict[tuple[int, int], dict[int, int]] = {}
        self._bi_cont: dict[int, dict[int, int]] = {}
        self._p_cont = np.full(vocab_size, 1.0 / vocab_size)
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def fit(self, examples: Examples) -> KneserNeyTrigram:
        """Count trigrams (u, v, w) from the examples' last two context ids and targets."""
        if examples.x.shape[1] < 2:
            raise ValueError("a trigram needs examples with at least 2 context words")
        tri: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        histories = zip(examples.x[:, -2].tolist(), examples.x[:, -1].tolist(), strict=True)
        for (u, v), w in zip(histories, examples.y.tolist(), strict=True):
            tri[(u, v)][w] += 1
        bi_cont: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for (_, v), followers in tri.items():  # N1+(. v w): distinct u preceding (v, w)
            for w in followers:
                bi_cont[v][w] += 1
        uni_cont = np.zeros(self.vocab_size)
        for followers in bi_cont.values():  # N1+(. w): distinct v preceding w
            for w in followers:
                uni_cont[w] += 1
        uni_cont += 1e-3  # every word keeps a little mass: no zero probabilities, finite perplexity
        self._tri = {k: dict(d) for k, d in tri.items()}
        self._bi_cont = {k: dict(d) for k, d in bi_cont.items()}
        self._p_cont = uni_cont / uni_cont.sum()
        self._cache.clear()
        return self

    def _interpolate(self, counts: dict[int, int] | None, lower: np.ndarray) -> np.ndarray:
        if not counts:
            return lower
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        c = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        total = c.sum()
        p = lower * (self.discount * len(c) / total)
        p[ids] += np.maximum(c - self.discount, 0.0) / total
        return p

    def distribution(self, u: int, v: int) -> np.ndarray:
        """P(. | u v) as a dense (V,) vector (cached per history)."""
        key = (u, v)
        cached = self._cache.get(key)
        if cached is None:
            p_v = self._interpolate(self._bi_cont.get(v), self._p_cont)
            cached = self._interpolate(self._tri.get(key), p_v)
            if len(self._cache) < 200_000:
                self._cache[key] = cached
        return cached

    def log_prob_and_topk(
        self, examples: Examples, k: int = 3, exclude: tuple[int, ...] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log P(target), top-k predicted ids per example, never one of ``exclude``)."""
        n = len(examples)
        logp = np.empty(n)
        topk = np.empty((n, k), dtype=np.int64)
        excl = list(exclude)
        for i, (u, v, w) in enumerate(
            zip(examples.x[:, -2].tolist(), examples.x[:, -1].tolist(), examples.y.tolist(), strict=False)
        ):
            p = self.distribution(u, v)
            logp[i] = np.log(p[w])
            scores = p.copy()
            scores[excl] = -1.0
            best = np.argpartition(-scores, k)[:k]
            topk[i] = best[np.argsort(-scores[best])]
        return logp, topk
