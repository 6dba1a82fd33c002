"""Next-word training examples: fixed windows of the k previous word ids and the next word."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Examples", "anchor_windows", "make_examples"]


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


def anchor_windows(examples: Examples, every: int) -> np.ndarray:
    """Indices of the windows that, each scored on its last ``every`` positions, cover every target once.

    Windows of one sentence are consecutive (``make_examples``): window t+1 continues window t when
    it is window t shifted by one word. Window t is an anchor when the number r of windows after it
    in its sentence is a multiple of ``every``; its positions k-every..k-1 predict the targets of
    windows t-every+1..t (those before the sentence's start are ``<s>``, never a target), so each
    target is scored exactly once, from at least k-every+1 words of its context.
    """
    if every < 1 or every > examples.x.shape[1]:
        raise ValueError(f"every must be in [1, {examples.x.shape[1]}], got {every}")
    x, y = examples.x, examples.y
    cont = np.zeros(len(y), dtype=bool)  # window t+1 continues window t
    if len(y) > 1:
        cont[:-1] = (x[1:, :-1] == x[:-1, 1:]).all(axis=1) & (x[1:, -1] == y[:-1])
    remaining = np.zeros(len(y), dtype=np.int64)  # r: windows after t in its sentence
    for t in range(len(y) - 2, -1, -1):
        if cont[t]:
            remaining[t] = remaining[t + 1] + 1
    return np.flatnonzero(remaining % every == 0)
