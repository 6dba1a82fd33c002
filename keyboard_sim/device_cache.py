"""The device's cache LM: the words this device's user typed, mixed into the decrypted distribution.

A classical cache language model (Kuhn & De Mori 1990; Grave et al. 2017) applied by the device
after it decrypts the server's (personalized) next-word distribution p:

    p'(w) = (1 - l_u - l_b [prev seen]) p(w) + l_u q_uni(w) + l_b q_bi(w | prev)

q_uni and q_bi are the unigram and bigram frequencies of what the user typed on this device (the
text it contributed, the sentences it sent, and the words already typed in the current text field),
so they are up to date after every word. It needs no server: the counts never leave the device and
the bigram part selects a row by the previous word, which the server never sees (it cannot apply it
under HE). The server-held adapter is what the user's other devices share; this cache is local.
The weights are chosen on train users when a release is written (``hushtype.adapter_settings``) and
recorded in its card (``personalization.device_cache``); cards without them turn the cache off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.release import card_adapter_settings

__all__ = ["DeviceCache", "DeviceCacheConfig", "mix_cache"]

_BOS = 1
_FIRST_WORD = 2  # ids 0 <unk> and 1 <s> are never counted


@dataclass(frozen=True)
class DeviceCacheConfig:
    """The cache's weights in the mixture (0 and 0: off)."""

    unigram_weight: float = 0.0
    bigram_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("unigram_weight", "bigram_weight"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"DeviceCacheConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.unigram_weight + self.bigram_weight >= 1.0:
            raise ValueError("DeviceCacheConfig: unigram_weight + bigram_weight must be < 1")

    @property
    def enabled(self) -> bool:
        """Whether the cache changes anything."""
        return self.unigram_weight > 0 or self.bigram_weight > 0

    @classmethod
    def from_card(cls, card: dict) -> DeviceCacheConfig:
        """The weights a release's card records (``personalization.device_cache``); off without them."""
        recorded = card_adapter_settings(card).get("device_cache") or {}
        try:
            return cls(
                **{k: float(v) for k, v in recorded.items() if k in ("unigram_weight", "bigram_weight")}
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model card: bad personalization.device_cache {recorded!r} ({exc})") from None

    def to_card(self) -> dict:
        """The card's ``personalization.device_cache`` for these weights."""
        return {"unigram_weight": self.unigram_weight, "bigram_weight": self.bigram_weight}


def mix_cache(
    p: np.ndarray, unigram: np.ndarray, bigram: np.ndarray, seen: np.ndarray, config: DeviceCacheConfig
) -> np.ndarray:
    """The mixture for rows of p (n, V): ``unigram`` (n, V) or (V,), ``bigram`` (n, V) rows of the
    previous words, ``seen`` (n,) whether the previous word has a bigram row."""
    lb = config.bigram_weight * np.asarray(seen, dtype=np.float64)[:, None]
    return (1.0 - config.unigram_weight - lb) * p + config.unigram_weight * unigram + lb * bigram


class DeviceCache:
    """Counts of the words typed on this device (never uploaded) and the mixture they give."""

    def __init__(self, vocab_size: int, config: DeviceCacheConfig | None = None) -> None:
        self.vocab_size = vocab_size
        self.config = config or DeviceCacheConfig()
        self.unigram = np.zeros(vocab_size)
        self.bigram: dict[int, dict[int, int]] = {}

    def add_pairs(self, prev: Sequence[int], words: Sequence[int]) -> None:
        """Count each word (ids < 2 skipped) and each (previous word, word) pair."""
        for a, b in zip(prev, words, strict=True):
            if b >= _FIRST_WORD:
                self.unigram[b] += 1
                row = self.bigram.setdefault(int(a), {})
                row[int(b)] = row.get(int(b), 0) + 1

    def add_sentence(self, ids: Sequence[int]) -> None:
        """Count one sentence's word ids (its first word follows <s>)."""
        ids = list(ids)
        self.add_pairs([_BOS, *ids][:-1], ids)

    def distributions(self, prev: int, pending: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, bool]:
        """(unigram (V,), bigram row of ``prev`` (V,), whether it has one) of the counts plus ``pending``:
        the word ids typed in the text field so far, not yet counted (<s> between its sentences)."""
        unigram = self.unigram.copy()
        row = np.zeros(self.vocab_size)
        for word, count in self.bigram.get(int(prev), {}).items():
            row[word] += count
        pending = list(pending)
        for a, b in zip([_BOS, *pending][:-1], pending, strict=True):
            if b >= _FIRST_WORD:
                unigram[b] += 1
                row[b] += a == prev
        total, row_total = unigram.sum(), row.sum()
        unigram = unigram / total if total else unigram
        return unigram, row / row_total if row_total else row, bool(row_total)

    def mix(self, p: np.ndarray, prev: int, pending: Sequence[int] = ()) -> np.ndarray:
        """The device's distribution (V,) from the decrypted one ``p`` (V,)."""
        if not self.config.enabled:
            return p
        unigram, row, seen = self.distributions(prev, pending)
        return mix_cache(p[None, :], unigram, row[None, :], np.array([seen]), self.config)[0]
