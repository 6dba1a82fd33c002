"""Noisy-channel autocorrect: rank vocabulary words by ``log P(taps | w) + lm_weight * log P(w | context)``.

Decoding rule (Goodman et al. 2002; the noisy channel of Kernighan, Church & Gale 1990)::

    w* = argmax_w  log P(taps | w) + lambda * log P(w | context)

**Spatial channel** ``P(taps | w)``. With ``n`` taps ``t_1..t_n`` and a word ``w`` of length ``L``,
key centres ``c(w_k)``, and the keyboard's believed touch model (``sigma``, ``offset``,
``skip_rate`` = p_s, ``double_rate`` = p_d from ``TouchModel.config``)::

    g(t, k) = log N(t; c(w_k) + offset, sigma^2 I)

    L == n:      sum_i g(t_i, i)                                 + n * log(1 - p_s - p_d)
    L == n + 1:  logsumexp_j [ sum_i g(t_i, i if i < j else i+1) ] + n * log(1 - p_s - p_d) + log p_s
                 (character j was skipped; j = 0..L-1)
    L == n - 1:  logsumexp_j [ sum_i g(t_i, i if i <= j else i-1) ] + (L-1) * log(1 - p_s - p_d) + log p_d
                 (character j was doubled: taps j and j+1 both aim at w_j; j = 0..L-1)
    otherwise:   -inf

That is the exact channel for *at most one* skip or double per word (positions marginalised);
words needing two or more such edits are not candidates. With ``p_s = 0`` (``p_d = 0``) words one
character longer (shorter) than the taps are excluded. Vocabulary words with characters that
have no key (digits, accented letters) are never candidates.

**Language model** ``P(w | context)``: supplied by the caller, because the LM lives in ``models/``
and this module must not import it. Either an array of log-probs over the vocabulary
(``(V,)``, same order as ``vocab_words``), a callable mapping candidate words to their log-probs
(called only for the words whose spatial score is finite), or ``None`` for a uniform LM.

Word boundaries are taken from the taps registered as space (``TypedText.word_taps``); a space
tap that lands on a letter merges two words and is out of scope here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from keyboard_sim.touch import TouchModel

__all__ = ["Candidate", "VocabIndex", "spatial_log_likelihood", "correct"]

LMScores = np.ndarray | Callable[[Sequence[str]], Sequence[float] | np.ndarray] | None


@dataclass(frozen=True)
class Candidate:
    """One ranked correction: ``score = spatial + lm_weight * lm``."""

    word: str
    score: float
    spatial: float  # log P(taps | word)
    lm: float  # log P(word | context)
    index: int  # position in the vocabulary


class VocabIndex:
    """Vocabulary grouped by word length with key indices precomputed; build once, reuse per word.

    Parameters
    ----------
    vocab_words : Sequence[str]
        The vocabulary, in the order of the LM's log-prob array.
    touch_model : TouchModel
        Supplies the layout; words with characters not on it are dropped from the index.
    """

    def __init__(self, vocab_words: Sequence[str], touch_model: TouchModel) -> None:
        self.words = list(vocab_words)
        self.layout = touch_model.layout
        by_len: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for v, word in enumerate(self.words):
            if word and self.layout.supports(word):
                ids, keys = by_len.setdefault(len(word), ([], []))
                ids.append(v)
                keys.append(self.layout.key_index(word))
        # length -> (vocab ids (W,), key indices (W, L))
        self.by_length = {n: (np.asarray(ids), np.stack(keys)) for n, (ids, keys) in by_len.items()}

    def __len__(self) -> int:
        return len(self.words)


def _gauss_terms(taps: np.ndarray, keys: np.ndarray, model: TouchModel) -> np.ndarray:
    """``g[w, i, k] = log N(t_i; c(word_w[k]) + offset, sigma^2 I)``, shape ``(W, n, L)``."""
    sigma = max(model.config.sigma, 1e-6)
    means = model.layout.centres[keys] + np.asarray(model.config.offset)  # (W, L, 2)
    d2 = ((taps[None, :, None, :] - means[:, None, :, :]) ** 2).sum(axis=-1)  # (W, n, L)
    return -d2 / (2 * sigma**2) - np.log(2 * np.pi * sigma**2)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _length_scores(taps: np.ndarray, keys: np.ndarray, model: TouchModel) -> np.ndarray:
    """Spatial log-likelihood ``(W,)`` of ``taps`` ``(n, 2)`` under words with key indices ``(W, L)``."""
    n, L = len(taps), keys.shape[1]
    p_s, p_d = model.config.skip_rate, model.config.double_rate
    with np.errstate(divide="ignore"):
        log_ok, log_s, log_d = np.log(1.0 - p_s - p_d), np.log(p_s), np.log(p_d)
    g = _gauss_terms(taps, keys, model)  # (W, n, L)
    if L == n:
        return np.trace(g, axis1=1, axis2=2) + n * log_ok
    if L == n + 1:  # skipped character j: tap i aims at i (i < j) or i + 1 (i >= j)
        same = np.diagonal(g, offset=0, axis1=1, axis2=2)  # (W, n): tap i -> char i
        shift = np.diagonal(g, offset=1, axis1=1, axis2=2)  # (W, n): tap i -> char i + 1
        prefix = np.concatenate([np.zeros((len(g), 1)), np.cumsum(same, axis=1)], axis=1)  # (W, n+1)
        suffix = np.concatenate([np.cumsum(shift[:, ::-1], axis=1)[:, ::-1], np.zeros((len(g), 1))], axis=1)
        return _logsumexp(prefix + suffix, axis=1) + n * log_ok + log_s  # j = 0..n (= L - 1)
    if L == n - 1:  # doubled character j: tap i aims at i (i <= j) or i - 1 (i > j)
        same = np.diagonal(g, offset=0, axis1=1, axis2=2)  # (W, L): tap i -> char i, i < L
        back = np.diagonal(g, offset=-1, axis1=1, axis2=2)  # (W, L): tap i + 1 -> char i
        prefix = np.cumsum(same, axis=1)  # (W, L): taps 0..j on chars 0..j
        suffix = np.concatenate([np.cumsum(back[:, ::-1], axis=1)[:, ::-1], np.zeros((len(g), 1))], axis=1)
        return _logsumexp(prefix + suffix[:, :L], axis=1) + (L - 1) * log_ok + log_d  # j = 0..L-1
    return np.full(len(keys), -np.inf)


def spatial_log_likelihood(taps: np.ndarray, index: VocabIndex, touch_model: TouchModel) -> np.ndarray:
    """``log P(taps | w)`` for every vocabulary word ``(V,)``; ``-inf`` for non-candidates."""
    taps = np.asarray(taps, dtype=np.float64).reshape(-1, 2)
    out = np.full(len(index), -np.inf)
    n = len(taps)
    if n == 0:
        return out
    for L in (n - 1, n, n + 1):
        if L in index.by_length:
            ids, keys = index.by_length[L]
            with np.errstate(invalid="ignore"):
                out[ids] = _length_scores(taps, keys, touch_model)
    return np.where(np.isnan(out), -np.inf, out)


def correct(
    taps: np.ndarray,
    vocab_words: Sequence[str] | VocabIndex,
    lm_logprobs: LMScores,
    touch_model: TouchModel,
    top_k: int = 3,
    lm_weight: float = 1.0,
) -> list[Candidate]:
    """The ``top_k`` vocabulary words for one word's ``taps`` ``(n, 2)``, best first.

    Parameters
    ----------
    taps : np.ndarray
        Tap coordinates of one word in key widths (no space taps).
    vocab_words : Sequence[str] | VocabIndex
        The vocabulary; pass a prebuilt ``VocabIndex`` when correcting many words.
    lm_logprobs : np.ndarray | Callable | None
        ``log P(w | context)``: an array ``(V,)`` over the vocabulary, a callable from candidate
        words to their log-probs, or ``None`` for a uniform LM.
    touch_model : TouchModel
        The keyboard's believed touch model (sigma, offset, skip/double rates).
    top_k : int
        How many candidates to return (default: 3); fewer if fewer are reachable.
    lm_weight : float
        Weight lambda on the LM term (default: 1.0, the plain noisy channel).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    index = vocab_words if isinstance(vocab_words, VocabIndex) else VocabIndex(vocab_words, touch_model)
    spatial = spatial_log_likelihood(taps, index, touch_model)
    ids = np.flatnonzero(np.isfinite(spatial))
    if lm_logprobs is None:
        lm = np.full(len(ids), -np.log(len(index)))
    elif callable(lm_logprobs):
        lm = np.asarray(lm_logprobs([index.words[i] for i in ids]), dtype=np.float64).reshape(-1)
        if lm.shape != ids.shape:
            raise ValueError(f"lm_logprobs callable returned {lm.shape[0]} scores for {len(ids)} candidates")
    else:
        lm_all = np.asarray(lm_logprobs, dtype=np.float64)
        if lm_all.shape != (len(index),):
            raise ValueError(
                f"lm_logprobs must have shape ({len(index)},) like the vocabulary, got {lm_all.shape}"
            )
        lm = lm_all[ids]
    score = spatial[ids] + lm_weight * lm
    order = np.argsort(-score, kind="stable")[:top_k]
    return [
        Candidate(index.words[ids[o]], float(score[o]), float(spatial[ids[o]]), float(lm[o]), int(ids[o]))
        for o in order
        if np.isfinite(score[o])
    ]
