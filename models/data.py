"""Next-word training examples: fixed windows of the k previous word ids and the next word."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Examples", "make_examples"]


@dataclass
class Examples:
    """``x``: (n, k) int64 context ids (oldest first); ``y``: (n,) int64 next-word ids."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"Examples need x (n, k) and y (n,), got {self.x.shape} and {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls, context: int) -> Examples:
        """No examples, with the right shapes."""
        return cls(np.zeros((0, context), np.int64), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: Iterable[Examples], context: int) -> Examples:
        """All ``parts`` stacked in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(context)
        return cls(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))


def make_examples(sentences: Iterable[list[int]], context: int, bos_id: int) -> Examples:
    """One example per word of every sentence: its ``context`` predecessors, left-padded with ``<s>``.

    Every word is a target (``<unk>`` included; metrics report with and without it); ``<s>`` is
    never a target, and there is no end-of-sentence target (a keyboard suggests words).
    """
    xs: list[list[int]] = []
    ys: list[int] = []
    for sentence in sentences:
        padded = [bos_id] * context + list(sentence)
        for i, target in enumerate(sentence):
            xs.append(padded[i : i + context])
            ys.append(target)
    if not ys:
        return Examples.empty(context)
    return Examples(np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64))
