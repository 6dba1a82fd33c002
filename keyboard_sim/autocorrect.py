"""Noisy-channel autocorrect, completion and the suggestion strip.

Decoding rule (Kernighan, Church & Gale 1990; Goodman et al. 2002 for touch keyboards)::

    w* = argmax_w  log P(typed | w) + lambda * log P(w | context)

- ``log P(typed | w)``: ``keyboard_sim.channel`` (touch likelihood of the taps + learned edit
  rates: key-distance-weighted substitutions, insertions, deletions, transpositions, several
  edits per word).
- ``log P(w | context)``: the language model's log-softmax when the caller has one (its vocabulary
  given as ``lm_words``), else a unigram prior. The **correction vocabulary** is larger than the
  LM's: the top of symspellpy's English frequency list (MIT) plus the LM's own words. A word the
  LM does not know gets ``log P(<unk> | context) + log P_unigram(w | not in the LM)``: the LM's
  unknown-word mass shared out by frequency.
- Candidates come from a symmetric deletion index (``keyboard_sim.candidates``), scored best
  prior first with an early-exit bound, so only a few dozen alignments run per word.
- **Confidence rule**: a typed word that is itself in the vocabulary is kept unless the best
  other word beats it by more than ``keep_margin`` nats (``AutocorrectConfig``); out-of-vocabulary
  input takes the best candidate; with no candidate the input is kept.

``complete`` ranks the vocabulary words that start with a prefix by the same prior; ``strip``
fills the three slots a phone shows above the keys.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from keyboard_sim.candidates import DeletionIndex, PrefixIndex
from keyboard_sim.channel import (
    ALPHABET,
    ChannelTables,
    Typed,
    channel_cost,
    estimate_channel,
    finish_cost,
    kept_costs,
    strip_bound,
)
from keyboard_sim.touch import KeyboardLayout

__all__ = [
    "AutocorrectConfig",
    "Candidate",
    "Correction",
    "Autocorrector",
    "codespell_channel",
    "correction_vocabulary",
    "default_autocorrector",
]

_TYPABLE = frozenset(ALPHABET)
_CHANNEL_VERSION = 1  # bump when estimate_channel changes: the cached tables are then re-estimated


@dataclass
class AutocorrectConfig:
    """Decoder settings; the defaults were chosen on codespell's tuning part and train users only.

    Parameters
    ----------
    vocab_size : int
        Words taken from the top of symspellpy's frequency list (default: 30000).
    sigma : float
        Believed touch-noise std in key widths (default: 0.25, the simulated population's median).
    edit_cost : float
        ``alpha``: nats added to every edit, ``-log`` of the odds that a word holds one (default: 3.0).
    prior_weight : float
        ``lambda`` on ``log P(w | context)`` (default: 1.0).
    keep_margin : float
        Nats by which a correction must beat an in-vocabulary typed word (default: 2.0).
    max_deletes, prefix_length : int
        Deletion-index reach (default: 2 deletes in the first 7 characters, as SymSpell).
    band : int
        Most net insertions/deletions per word (default: 2).
    """

    vocab_size: int = 30000
    sigma: float = 0.25
    edit_cost: float = 3.0
    prior_weight: float = 1.0
    keep_margin: float = 2.0
    max_deletes: int = 2
    prefix_length: int = 7
    band: int = 2

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"AutocorrectConfig.vocab_size must be >= 1, got {self.vocab_size}")
        for name in ("sigma", "prior_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"AutocorrectConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("edit_cost", "keep_margin"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"AutocorrectConfig.{name} must be finite, got {getattr(self, name)}")


@dataclass(frozen=True)
class Candidate:
    """One ranked word: ``score = channel + prior_weight * prior``."""

    word: str
    score: float
    channel: float  # log P(typed | word)
    prior: float  # log P(word | context)
    index: int  # id in the correction vocabulary


@dataclass(frozen=True)
class Correction:
    """The decision for one typed word: what to show and the ranked alternatives."""

    typed: str  # the characters a plain keyboard registered
    word: str  # the output: a correction or the typed word kept
    corrected: bool
    candidates: list[Candidate]


class Autocorrector:
    """Corrects and completes words over a correction vocabulary with unigram counts.

    Parameters
    ----------
    words, counts : Sequence[str], Sequence[float]
        Correction vocabulary and its frequencies (the unigram prior); words with a character
        that has no key are dropped.
    channel : ChannelTables
        Edit rates (``estimate_channel``).
    config : AutocorrectConfig | None
        Decoder settings (default: ``AutocorrectConfig()``).
    lm_words : Sequence[str] | None
        The language model's vocabulary (``<unk>`` at id 0); its typable words are added to the
        correction vocabulary and ``lm_logprobs`` arrays are read in its order.
    layout : KeyboardLayout | None
        The keyboard (default: QWERTY).
    """

    def __init__(
        self,
        words: Sequence[str],
        counts: Sequence[float],
        channel: ChannelTables,
        config: AutocorrectConfig | None = None,
        lm_words: Sequence[str] | None = None,
        layout: KeyboardLayout | None = None,
    ) -> None:
        if len(words) != len(counts):
            raise ValueError(f"words and counts differ in length: {len(words)} vs {len(counts)}")
        self.config = config or AutocorrectConfig()
        self.channel = channel
        self.layout = layout or KeyboardLayout()
        freq = {w: float(c) for w, c in zip(words, counts, strict=True) if w and set(w) <= _TYPABLE}
        floor = min(freq.values(), default=1.0)
        self.lm_ids: dict[int, int] = {}
        if lm_words is not None:
            for j, w in enumerate(lm_words):
                if j and w and set(w) <= _TYPABLE:
                    freq.setdefault(w, floor)
        self.words = list(freq)
        self.counts = [freq[w] for w in self.words]
        self._lengths = [len(w) for w in self.words]
        self.ids = {w: i for i, w in enumerate(self.words)}
        if lm_words is not None:
            self.lm_ids = {self.ids[w]: j for j, w in enumerate(lm_words) if w in self.ids}
        total = sum(freq.values())
        self.unigram = [math.log(freq[w] / total) for w in self.words]
        outside = sum(freq[w] for i, w in enumerate(self.words) if i not in self.lm_ids) or 1.0
        self._cond = [math.log(freq[w] / outside) for w in self.words]  # P(w | not in the LM)
        self.index = DeletionIndex(self.words, self.config.max_deletes, self.config.prefix_length)
        self.prefixes = PrefixIndex(self.words)
        self.window = 8.0  # nats behind the best beyond which candidates are not ranked
        self._lm_id_array = np.full(len(self.words), -1, dtype=np.int64)
        for i, j in self.lm_ids.items():
            self._lm_id_array[i] = j

    def __len__(self) -> int:
        return len(self.words)

    # -- priors ------------------------------------------------------------------
    def prior(self, lm_logprobs: np.ndarray | None = None) -> np.ndarray:
        """``log P(w | context)`` over the correction vocabulary ``(V,)``: unigram, or from the LM."""
        if lm_logprobs is None:
            return np.asarray(self.unigram)
        lm = np.asarray(lm_logprobs, dtype=np.float64)
        known = self._lm_id_array >= 0
        out = lm[0] + np.asarray(self._cond)
        out[known] = lm[self._lm_id_array[known]]
        return out

    def _prior_fn(self, lm_logprobs: np.ndarray | None):
        if lm_logprobs is None:
            return self.unigram.__getitem__
        lm = np.asarray(lm_logprobs, dtype=np.float64).tolist()
        lm_ids, cond, unk = self.lm_ids, self._cond, lm[0]
        return lambda i: lm[lm_ids[i]] if i in lm_ids else unk + cond[i]

    # -- correction --------------------------------------------------------------
    def typed(self, typed: str | np.ndarray) -> Typed:
        """Characters typed exactly, or taps ``(n, 2)`` scored by the believed touch model."""
        if isinstance(typed, str):
            bad = sorted(set(typed) - _TYPABLE)
            if bad:
                raise ValueError(
                    f"no key for {bad[0]!r} in {typed!r}: type lowercase letters and apostrophes"
                )
            return Typed.from_text(typed)
        return Typed.from_taps(typed, self.layout, self.config.sigma)

    def candidates(
        self, typed: str | np.ndarray | Typed, lm_logprobs: np.ndarray | None = None, top_k: int = 3
    ) -> list[Candidate]:
        """The ``top_k`` words best explaining ``typed`` (characters or taps), best first."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        t = typed if isinstance(typed, Typed) else self.typed(typed)
        if not t.codes:
            return []
        cfg = self.config
        prior = self._prior_fn(lm_logprobs)
        lam, alpha = cfg.prior_weight, cfg.edit_cost
        n = len(t.codes)
        ids = self.index.lookup(t.chars)
        own = self.ids.get(t.chars)
        if own is not None:
            ids.add(own)
        # A*-like: most promising first by prior minus a lower bound on the channel cost; the bound
        # is refined (common prefix/suffix, the shape of the differing middle) only when reached
        kept = kept_costs(self.channel, t, alpha)
        indel = alpha - self.channel.max_indel
        words, band, channel = self.words, cfg.band, self.channel
        lens = self._lengths
        near = [i for i in ids if -band <= lens[i] - n <= band]
        priors = self.unigram if lm_logprobs is None else {i: prior(i) for i in near}
        queue = [(lam * priors[i] - abs(lens[i] - n) * indel, i) for i in near]
        queue.sort(reverse=True)
        heap: list[tuple[float, int, float, float]] = []  # (score, id, channel, prior), k best
        best = -math.inf
        for upper, i in queue:
            p = priors[i]
            floor = max(heap[0][0] if len(heap) == top_k else -math.inf, best - self.window)
            if upper < floor:
                break  # no later candidate can enter the top k
            shape = strip_bound(channel, t, words[i], alpha, band, kept)
            if shape is None or lam * p - shape[2] - shape[3] < floor:
                continue
            cost = finish_cost(channel, t, words[i], alpha, shape, lam * p - floor, band)
            if cost == math.inf:
                continue
            item = (lam * p - cost, i, -cost, p)
            best = max(best, item[0])
            if len(heap) < top_k:
                heapq.heappush(heap, item)
            elif item[0] > heap[0][0]:
                heapq.heapreplace(heap, item)
        ranked = [item for item in sorted(heap, reverse=True) if item[0] >= best - self.window]
        return [Candidate(self.words[i], s, c, p, i) for s, i, c, p in ranked]

    def correct(
        self, typed: str | np.ndarray, lm_logprobs: np.ndarray | None = None, top_k: int = 3
    ) -> Correction:
        """Decide one word: the best candidate, or the typed word when the confidence rule keeps it."""
        t = self.typed(typed)
        found = self.candidates(t, lm_logprobs, top_k=top_k)
        word, corrected = t.chars, False
        if found and found[0].word != t.chars:
            own = self.ids.get(t.chars)
            if own is None:
                word, corrected = found[0].word, True
            else:
                kept = next((c for c in found if c.index == own), None)
                kept_score = kept.score if kept else self._score(t, own, lm_logprobs)
                if found[0].score - kept_score > self.config.keep_margin:
                    word, corrected = found[0].word, True
        return Correction(t.chars, word, corrected, found[:top_k])

    def _score(self, t: Typed, i: int, lm_logprobs: np.ndarray | None) -> float:
        cost = channel_cost(self.channel, t, self.words[i], self.config.edit_cost, band=self.config.band)
        return self.config.prior_weight * self._prior_fn(lm_logprobs)(i) - cost

    # -- completion ---------------------------------------------------------------
    def complete(self, prefix: str, prior: np.ndarray, k: int = 3) -> list[str]:
        """The ``k`` most probable vocabulary words starting with ``prefix`` under ``prior`` ``(V,)``."""
        lo, hi = self.prefixes.range(prefix)
        if hi <= lo:
            return []
        ids = np.asarray(self.prefixes.ids[lo:hi])
        return [self.words[i] for i in ids[np.argsort(-prior[ids], kind="stable")[:k]]]

    def strip(
        self,
        prefix: str,
        lm_logprobs: np.ndarray | None = None,
        typed: str | np.ndarray | None = None,
    ) -> list[str]:
        """The three suggestion slots: completions of ``prefix``, topped up with corrections of ``typed``.

        ``typed`` is what was tapped for the prefix (taps or letters; default: ``prefix`` itself).
        """
        slots = self.complete(prefix, self.prior(lm_logprobs), 3)
        typed = prefix if typed is None else typed
        if len(slots) < 3 and len(typed):
            for c in self.candidates(typed, lm_logprobs, top_k=3):
                if c.word not in slots and len(slots) < 3:
                    slots.append(c.word)
        return slots


# --------------------------------------------------------------------------- defaults


def correction_vocabulary(size: int) -> tuple[list[str], list[int]]:
    """The ``size`` most frequent typable words of symspellpy's English list and their counts."""
    from models.vocab import symspell_words

    pairs = [(w, c) for w, c in symspell_words() if set(w) <= _TYPABLE][:size]
    return [w for w, _ in pairs], [c for _, c in pairs]


@lru_cache(maxsize=2)
def codespell_channel(cache_dir: str | None = None) -> ChannelTables:
    """Edit tables estimated on the **tuning** part of codespell's list (cached on disk)."""
    from keyboard_sim.corpus import default_cache_dir
    from keyboard_sim.misspellings import CODESPELL_VERSION, load_codespell_pairs, split_pairs

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"channel-codespell-{CODESPELL_VERSION}-tune-v{_CHANNEL_VERSION}.npz"
    source = f"codespell {CODESPELL_VERSION} dictionary.txt, tuning part (30% by hash of the right word)"
    if path.exists():
        z = np.load(path)
        return ChannelTables(z["sub"], z["ins"], z["dele"], z["trans"], z["keep"], str(z["source"]))
    tune = split_pairs(load_codespell_pairs(cache_dir), "tune")
    tables = estimate_channel(((p.typed, p.right) for p in tune), source=source)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        sub=tables.sub,
        ins=tables.ins,
        dele=tables.dele,
        trans=tables.trans,
        keep=tables.keep,
        source=np.asarray(tables.source),
    )
    return tables


def default_autocorrector(
    config: AutocorrectConfig | None = None,
    lm_words: Sequence[str] | None = None,
    cache_dir: str | None = None,
) -> Autocorrector:
    """symspellpy's top ``config.vocab_size`` words + the LM's, codespell-estimated channel."""
    config = config or AutocorrectConfig()
    words, counts = correction_vocabulary(config.vocab_size)
    return Autocorrector(words, counts, codespell_channel(cache_dir), config, lm_words=lm_words)
