"""Next-word training examples: fixed windows of the k previous word ids and the next word."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CONTEXT_SCOPES",
    "Examples",
    "anchor_windows",
    "context_stream",
    "last_context",
    "line_examples",
    "make_examples",
    "sentence_windows",
]

# "sentence": a word's context starts at its sentence (the releases before this field existed);
# "line": the previous words of the same line (speech / text field), sentences separated by <s>.
CONTEXT_SCOPES = ("sentence", "line")


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


def _check_scope(scope: str) -> None:
    if scope not in CONTEXT_SCOPES:
        raise ValueError(f"context scope must be one of {CONTEXT_SCOPES}, got {scope!r}")


def context_stream(sentences: list[list[int]], context: int, bos_id: int) -> list[int]:
    """One line's ids as a model reads them: ``context`` x ``<s>``, its sentences, ``<s>`` between."""
    stream = [bos_id] * context
    for i, sentence in enumerate(sentences):
        stream += ([bos_id] if i else []) + list(sentence)
    return stream


def line_examples(
    lines: Iterable[list[list[int]]], context: int, bos_id: int, scope: str = "sentence"
) -> Examples:
    """Windows of every word of ``lines`` (each a list of sentences of ids), the one context builder.

    ``scope="sentence"``: each sentence on its own (``make_examples``). ``scope="line"``: a word's
    context is the ``context`` previous tokens of its line, sentence ends kept as one ``<s>``; the
    targets are the same (every word, never ``<s>``), in the same order.
    """
    _check_scope(scope)
    if scope == "sentence":
        return make_examples((s for line in lines for s in line), context, bos_id)
    xs: list[list[int]] = []
    ys: list[int] = []
    for line in lines:
        stream = context_stream(line, context, bos_id)
        for i in range(context, len(stream)):
            if stream[i] != bos_id:
                xs.append(stream[i - context : i])
                ys.append(stream[i])
    if not ys:
        return Examples.empty(context)
    return Examples(np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64))


def sentence_windows(examples: Examples, bos_id: int) -> Examples:
    """The same windows cut at their last ``<s>`` (tokens before it become ``<s>``).

    Applied to ``scope="line"`` windows this gives exactly the ``scope="sentence"`` windows: how a
    model that only reads its own sentence (the Kneser-Ney baseline) sees the same targets.
    """
    x = examples.x.copy()
    k = x.shape[1]
    is_bos = x == bos_id
    last = np.where(is_bos.any(axis=1), k - 1 - np.argmax(is_bos[:, ::-1], axis=1), -1)  # (n,)
    x[np.arange(k)[None, :] <= last[:, None]] = bos_id
    return Examples(x, examples.y)


def last_context(
    sentences: list[list[int]], context: int, bos_id: int, scope: str = "sentence", *, ended: bool = False
) -> list[int]:
    """The ``context`` ids a model reads to predict the word after ``sentences`` (typed text).

    ``ended``: the text ends with a sentence end, so the next word starts a new sentence. The same
    windows as ``line_examples`` would build for that next word.
    """
    _check_scope(scope)
    if scope == "sentence":
        sentences = [] if ended or not sentences else sentences[-1:]
    stream = context_stream(sentences, context, bos_id)
    if ended and sentences and scope == "line":
        stream.append(bos_id)
    return stream[-context:]


def anchor_windows(examples: Examples, every: int, bos_id: int = 1) -> np.ndarray:
    """Indices of the windows that, each scored on its last ``every`` positions, cover every target once.

    Windows of one line (or sentence) are consecutive (``line_examples``): window t+1 continues
    window t one token later (window t shifted by one word) or two (shifted by the word and a
    sentence's ``<s>``). Walking each stream backwards, a window is an anchor when it is the
    stream's last or lies at least ``every`` tokens before the previous anchor; its positions
    k-every..k-1 predict the tokens up to that anchor (only ``<s>``, never a target, is skipped),
    so each target is scored exactly once, from at least k-every+1 tokens of its context.
    """
    if every < 1 or every > examples.x.shape[1]:
        raise ValueError(f"every must be in [1, {examples.x.shape[1]}], got {every}")
    x, y = examples.x, examples.y
    step = np.zeros(len(y), dtype=np.int64)  # tokens from window t to window t+1; 0: a new stream
    if len(y) > 1:
        one = (x[1:, :-1] == x[:-1, 1:]).all(axis=1) & (x[1:, -1] == y[:-1])
        two = np.zeros_like(one)
        if x.shape[1] > 1:
            two = (x[1:, :-2] == x[:-1, 2:]).all(axis=1) & (x[1:, -2] == y[:-1]) & (x[1:, -1] == bos_id)
        step[:-1] = np.where(one, 1, np.where(two, 2, 0))
    anchor = np.zeros(len(y), dtype=bool)
    gap = 0  # tokens from window t to the next anchor
    for t in range(len(y) - 1, -1, -1):
        gap = gap + step[t] if step[t] else 0
        if gap == 0 or gap >= every:
            anchor[t], gap = True, 0
    return np.flatnonzero(anchor)
