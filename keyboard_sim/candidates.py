"""Fast candidate search: a symmetric deletion index for corrections, a sorted list for completions.

``DeletionIndex`` is SymSpell's symmetric delete (Garbe 2012): every vocabulary word's first
``prefix_length`` characters, with up to ``max_deletes`` characters deleted, map to the word.
A typed word's own deletes, looked up, give every word within ``max_deletes`` edits of its
prefix (insertions, deletions, substitutions and transpositions all reduce to deletes on one
side or both) without touching the rest of the vocabulary. The caller scores the candidates
with the full channel (``keyboard_sim.channel``), which also rejects what is too far.

``PrefixIndex`` keeps the words sorted so the words starting with a prefix are one ``bisect``
range: completion scores only that range.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["DeletionIndex", "PrefixIndex", "deletes"]


def deletes(word: str, max_deletes: int) -> set[str]:
    """``word`` and every string made from it by deleting up to ``max_deletes`` characters."""
    out = {word}
    frontier = {word}
    for _ in range(max_deletes):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))} - out
        out |= frontier
    return out


class DeletionIndex:
    """Words reachable from a typed word by deletes on both sides (see the module docstring).

    Parameters
    ----------
    words : Sequence[str]
        The correction vocabulary; candidate ids index into it.
    max_deletes : int
        Deletes per side (default: 2, i.e. two edits in the prefix).
    prefix_length : int
        Characters of each word indexed (default: 7, as SymSpell); edits after them are found
        by the channel, which scores the whole word.
    """

    def __init__(self, words: Sequence[str], max_deletes: int = 2, prefix_length: int = 7) -> None:
        if max_deletes < 0 or prefix_length < 1:
            raise ValueError(
                f"need max_deletes >= 0 and prefix_length >= 1, got {max_deletes}, {prefix_length}"
            )
        self.words = list(words)
        self.max_deletes, self.prefix_length = max_deletes, prefix_length
        self._index: dict[str, list[int]] = {}
        for i, word in enumerate(self.words):
            for key in deletes(word[:prefix_length], max_deletes):
                self._index.setdefault(key, []).append(i)

    def lookup(self, typed: str) -> set[int]:
        """Ids of the words whose prefix shares a delete with the typed word's prefix."""
        found: set[int] = set()
        for key in deletes(typed[: self.prefix_length], self.max_deletes):
            ids = self._index.get(key)
            if ids:
                found.update(ids)
        return found


class PrefixIndex:
    """Vocabulary ids sorted by spelling; ``range(prefix)`` is the slice of words with that prefix."""

    def __init__(self, words: Sequence[str]) -> None:
        order = sorted(range(len(words)), key=lambda i: words[i])
        self.sorted_words = [words[i] for i in order]
        self.ids = order

    def range(self, prefix: str) -> tuple[int, int]:
        """``(lo, hi)`` positions in ``sorted_words`` of the words starting with ``prefix``."""
        lo = bisect.bisect_left(self.sorted_words, prefix)
        hi = bisect.bisect_left(self.sorted_words, prefix + "\U0010ffff")
        return lo, hi
