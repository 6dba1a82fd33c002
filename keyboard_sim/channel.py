"""The error channel ``log P(taps | w)``: touch noise *and* the edits people make, rates from data.

A typed word is explained as the intended word ``w`` passed through a weighted Damerau-Levenshtein
channel (Kernighan, Church & Gale 1990; Brill & Moore 2000 for the learned edit tables), whose
output characters are then tapped with Gaussian touch noise (Goodman et al. 2002). Viterbi
alignment, costs in nats (``-log`` probabilities), each edit costing its table entry plus the
global ``edit_cost`` (``-log`` of the odds that a word holds an edit at all)::

    keep w_j as tap i    -logaddexp(log(1 - p_sub(w_j)) + s_i(w_j),  sub[w_j, r_i] + s_i(r_i))
    substitute           sub[a, b]          P(b typed | a meant): learned confusions, backed off to
                                            classes (adjacent keys, vowel for vowel, other)
    insert b             ins[prev, b, next] backed off to (doubling prev, repeating next, a key
                                            adjacent to prev or next, other)
    delete a             dele[prev, a]      backed off to (dropping a double letter, a vowel, other)
    transpose ab -> ba   trans[a, b]        backed off to one shared rate

``s_i(k) = log N(t_i; c(k), sigma^2) - log N(t_i; c(r_i), sigma^2)`` is the touch likelihood of
key ``k`` for tap ``i`` relative to the key ``r_i`` the tap registered (0 for a tap on that key's
centre; ``-d^2 / 2 sigma^2`` for a centred tap ``d`` key widths away). Substitutions by key
distance thus come from two places: touch noise (the Gaussian) and the learned confusion tables.
Spelling by sound shows up as learned substitutions (vowel for vowel, c/s/k), deletions of a
doubled consonant and insertions of a silent letter; no list-specific rules.

**Where the rates come from** (``estimate_channel``): real misspelling pairs (the tuning part of
codespell's list, ``keyboard_sim.misspellings``) aligned by Viterbi under the current tables,
edits counted with their contexts, opportunities counted in the right words, three rounds (hard
EM). A table entry is ``(count + m * class_rate / |class|) / (opportunities + m)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from keyboard_sim.touch import KeyboardLayout

__all__ = [
    "ALPHABET",
    "ChannelTables",
    "Typed",
    "estimate_channel",
    "channel_cost",
    "strip_bound",
    "kept_costs",
    "finish_cost",
    "align",
]

ALPHABET = "abcdefghijklmnopqrstuvwxyz'"
_A = len(ALPHABET)
_BOS, _EOS = _A, _A + 1  # context symbols: word start (before the first char), word end
_IDX = {c: i for i, c in enumerate(ALPHABET)}
_VOWELS = frozenset(_IDX[c] for c in "aeiouy")
_ADJACENT = 1.6  # key widths: row neighbours (1.0) and the keys diagonally above/below (~1.58)
_INF = math.inf
_LOG2 = math.log(2.0)


def _key_distances(layout: KeyboardLayout) -> np.ndarray:
    """``(A, A)`` distances between the centres of the alphabet's keys, in key widths."""
    xy = layout.key_centres(ALPHABET)
    return np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))


# --------------------------------------------------------------------------- tables


@dataclass
class ChannelTables:
    """Log-rates of every edit in context; built by ``estimate_channel``.

    Attributes
    ----------
    sub : np.ndarray
        ``(A, A)`` log P(typed b | meant a) per occurrence of ``a`` (diagonal unused).
    ins : np.ndarray
        ``(A + 1, A, A + 2)`` log P(b inserted between prev and next) per slot (prev may be
        word start, next may be word end).
    dele : np.ndarray
        ``(A + 1, A)`` log P(a dropped after prev) per occurrence of the bigram.
    trans : np.ndarray
        ``(A, A)`` log P(ab typed as ba) per occurrence of the bigram.
    keep : np.ndarray
        ``(A,)`` log P(a typed as itself), 1 minus its substitution rates.
    source : str
        Where the rates came from (pairs and rounds).
    """

    sub: np.ndarray
    ins: np.ndarray
    dele: np.ndarray
    trans: np.ndarray
    keep: np.ndarray
    source: str

    def __post_init__(self) -> None:
        # Python lists: the per-candidate DP indexes scalars, far faster than numpy item access
        self._sub, self._ins = self.sub.tolist(), self.ins.tolist()
        self._dele, self._trans, self._keep = self.dele.tolist(), self.trans.tolist(), self.keep.tolist()
        self.max_indel = float(max(self.ins.max(), self.dele.max()))  # the cheapest insertion/deletion
        self.max_rate = float(max(self.max_indel, self.sub.max(), self.trans.max()))
        # best rate of any edit that produces typed letter c / that consumes meant letter c
        sub = np.where(np.isfinite(self.sub), self.sub, -_INF)
        self.max_into = np.maximum(sub.max(axis=0), self.ins.max(axis=(0, 2))).tolist()
        self.max_from = np.maximum(sub.max(axis=1), self.dele.max(axis=0)).tolist()

    @classmethod
    def uniform(cls, layout: KeyboardLayout | None = None) -> ChannelTables:
        """Class-level rates before any data (the start of ``estimate_channel``).

        Equal rates everywhere except that dropping or adding a *repeated* letter is 10x likelier:
        it makes the first alignment of "occured" drop the second r of "rr" (the doubled-letter
        context) rather than the first (after "u"), so the counts gather in the shared context.
        """
        t = _tables_from_counts(_Counts(), _key_distances(layout or KeyboardLayout()), "uniform", m=1.0)
        sub, ins, dele = t.sub.copy(), t.ins.copy(), t.dele.copy()
        for c in range(_A):
            dele[c, c] += math.log(10.0)
            ins[c, c, :] += math.log(10.0)
        return cls(sub=sub, ins=ins, dele=dele, trans=t.trans, keep=t.keep, source="uniform")


class _Counts:
    """Edit counts and their opportunities, gathered from aligned pairs."""

    def __init__(self) -> None:
        self.sub = np.zeros((_A, _A))
        self.ins = np.zeros((_A + 1, _A, _A + 2))
        self.dele = np.zeros((_A + 1, _A))
        self.trans = np.zeros((_A, _A))
        self.unigram = np.zeros(_A)
        self.bigram = np.zeros((_A + 1, _A))  # (prev incl. start, char)
        self.slots = np.zeros((_A + 1, _A + 2))  # (prev, next) insertion slots

    def add_word(self, word: Sequence[int]) -> None:
        prev = _BOS
        for c in word:
            self.unigram[c] += 1
            self.bigram[prev, c] += 1
            self.slots[prev, c] += 1
            prev = c
        self.slots[prev, _EOS] += 1


def _smooth(count: np.ndarray, opp: np.ndarray, backoff: np.ndarray, m: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log((count + m * backoff) / (opp + m))


def _class_rate(count: np.ndarray, opp: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per-member rate of each class (its count over its members' summed opportunities), broadcast back."""
    out = np.zeros(classes.shape)
    for k in np.unique(classes):
        mask = classes == k
        out[mask] = (count[mask].sum() + 0.5) / max(opp[mask].sum(), 1.0)
    return out


def _tables_from_counts(counts: _Counts, dist: np.ndarray, source: str, m: float = 10.0) -> ChannelTables:
    """Smoothed log-rates: counts backed off to their class rate with ``m`` pseudo-opportunities."""
    A = _A
    vowel = np.zeros(A, dtype=bool)
    vowel[list(_VOWELS)] = True
    # substitution classes: 0 adjacent keys, 1 vowel for vowel, 2 other
    sub_cls = np.where(dist <= _ADJACENT, 0, np.where(vowel[:, None] & vowel[None, :], 1, 2))
    np.fill_diagonal(sub_cls, 3)
    sub_opp = np.broadcast_to(counts.unigram[:, None], (A, A))
    sub_back = _class_rate(counts.sub, sub_opp, sub_cls)
    sub = _smooth(counts.sub, sub_opp, sub_back, m)
    np.fill_diagonal(sub, -_INF)
    keep = np.log1p(-np.minimum(np.exp(sub).sum(axis=1), 0.5))

    # insertion classes by (prev, b, next): 0 doubles prev, 1 repeats next, 2 adjacent key, 3 other
    ins_cls = np.full((A + 1, A, A + 2), 3)
    near = dist <= _ADJACENT
    ins_cls[:A][near[:, :, None].repeat(A + 2, axis=2)] = 2
    near_next = np.zeros((A, A + 2), dtype=bool)
    near_next[:, :A] = near.T
    ins_cls[np.broadcast_to(near_next[None], ins_cls.shape) & (ins_cls == 3)] = 2
    for c in range(A):
        ins_cls[:, c, c] = 1
        ins_cls[c, c, :] = 0
    ins_opp = np.broadcast_to(counts.slots[:, None, :], ins_cls.shape)
    ins_back = _class_rate(counts.ins, ins_opp, ins_cls)
    # the learned part conditions on (prev, b) only: counts summed over next, shared by every next
    ins_pb = counts.ins.sum(axis=2, keepdims=True)
    ins_pb_opp = counts.slots.sum(axis=1)[:, None, None]
    ins = np.log((ins_pb + m * ins_back) / (ins_pb_opp + m))

    # deletion classes by (prev, a): 0 a doubles prev, 1 a vowel, 2 other
    del_cls = np.where(vowel[None, :], 1, 2).repeat(A + 1, axis=0)
    for c in range(A):
        del_cls[c, c] = 0
    dele = _smooth(counts.dele, counts.bigram, _class_rate(counts.dele, counts.bigram, del_cls), m)

    trans_cls = np.zeros((A, A), dtype=int)
    np.fill_diagonal(trans_cls, 1)
    trans_opp = counts.bigram[:A]
    trans = _smooth(counts.trans, trans_opp, _class_rate(counts.trans, trans_opp, trans_cls), m)
    np.fill_diagonal(trans, -_INF)
    return ChannelTables(sub=sub, ins=ins, dele=dele, trans=trans, keep=keep, source=source)


# --------------------------------------------------------------------------- typed input


@dataclass
class Typed:
    """What was typed: the registered characters and each tap's touch scores ``s_i(k)``.

    ``spatial`` is ``(n, A)`` (list of rows) or ``None`` for characters typed exactly
    (``s_i(k) = 0`` for the registered key, ``-inf`` elsewhere: no touch explanation).
    """

    chars: str
    codes: list[int]
    spatial: list[list[float]] | None

    @classmethod
    def from_text(cls, text: str) -> Typed:
        """Characters typed exactly (no taps)."""
        return cls(text, [_IDX[c] for c in text], None)

    @classmethod
    def from_taps(cls, taps: np.ndarray, layout: KeyboardLayout, sigma: float) -> Typed:
        """Taps ``(n, 2)`` in key widths scored against every key with the believed ``sigma``."""
        taps = np.asarray(taps, dtype=np.float64).reshape(-1, 2)
        centres = layout.key_centres(ALPHABET)  # (A, 2)
        d2 = ((taps[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (n, A)
        codes = d2.argmin(axis=1)  # the nearest letter key (a tap inside a word never means space)
        s = np.maximum(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * max(sigma, 1e-3) ** 2), -60.0)
        return cls("".join(ALPHABET[k] for k in codes), codes.tolist(), s.tolist())


# --------------------------------------------------------------------------- alignment


def _keep_cost(t: ChannelTables, typed: Typed, i: int, a: int, alpha: float) -> float:
    """Cost of meaning ``a`` where tap ``i`` registered ``r_i``: touch noise or a misspelling."""
    r = typed.codes[i]
    if typed.spatial is None:
        return -t._keep[a] if a == r else alpha - t._sub[a][r]
    s = typed.spatial[i]
    touch = t._keep[a] + s[a]
    spell = t._sub[a][r] - alpha + s[r] if a != r else -_INF
    hi = touch if touch > spell else spell
    return -(hi + math.log1p(math.exp(-abs(touch - spell))))


def channel_cost(
    t: ChannelTables, typed: Typed, word: str, alpha: float, bound: float = _INF, band: int = 2
) -> float:
    """``-log P(typed | word)`` (Viterbi, nats) or ``inf``; ``bound`` stops early once exceeded.

    The common prefix and suffix are kept letter for letter; the differing middle is aligned by
    a dynamic program within ``band`` of the diagonal (at most ``band`` net insertions/deletions).
    """
    shape = strip_bound(t, typed, word, alpha, band)
    return finish_cost(t, typed, word, alpha, shape, bound, band)


def kept_costs(t: ChannelTables, typed: Typed, alpha: float) -> list[float]:
    """``c[i]``: cost of keeping taps ``0..i-1`` as typed (prefix sums), for ``strip_bound``."""
    out = [0.0]
    for i, c in enumerate(typed.codes):
        out.append(out[-1] + _keep_cost(t, typed, i, c, alpha))
    return out


def strip_bound(
    t: ChannelTables, typed: Typed, word: str, alpha: float, band: int = 2, kept: list[float] | None = None
) -> tuple[int, int, float, float] | None:
    """``(p, q, fixed, lower)``: common prefix/suffix lengths, their cost, a lower bound on the rest.

    ``None`` when the lengths differ by more than ``band``. ``fixed + lower <= channel_cost``.
    ``kept`` is ``kept_costs(t, typed, alpha)``, passed in when scoring many words.
    """
    x, n, m = typed.codes, len(typed.codes), len(word)
    if abs(n - m) > band:
        return None
    idx = _IDX
    p = 0
    while p < n and p < m and x[p] == idx[word[p]]:
        p += 1
    q = 0
    while q < n - p and q < m - p and x[n - 1 - q] == idx[word[m - 1 - q]]:
        q += 1
    if kept is None:
        kept = kept_costs(t, typed, alpha)
    fixed = kept[p] + kept[n] - kept[n - q]
    N, M = n - q - p, m - q - p
    if N == 0 and M == 0:
        return p, q, fixed, 0.0
    # the differing middles start and end with a mismatch: one edit explains them only when they
    # are one substitution, insertion, deletion or transposition; each net length change is an indel
    one = N + M == 1 or N == M == 1 or (N == M == 2 and x[p] == idx[word[p + 1]] and x[p + 1] == idx[word[p]])
    if typed.spatial is None:
        lower = max(1 if one else 2, abs(N - M)) * (alpha - t.max_rate)
    else:  # a touch substitution can cost next to nothing
        lower = abs(N - M) * (alpha - t.max_indel)
    if not one:  # several edits: give the alignment one kept letter of slack on each side
        p, q = max(p - 1, 0), max(q - 1, 0)
        fixed = kept[p] + kept[n] - kept[n - q]
    return p, q, fixed, lower


def finish_cost(
    t: ChannelTables,
    typed: Typed,
    word: str,
    alpha: float,
    shape: tuple[int, int, float, float] | None,
    bound: float = _INF,
    band: int = 2,
) -> float:
    """``channel_cost`` given ``strip_bound``'s ``shape``: aligns the middle unless the bound rules it out."""
    if shape is None:
        return _INF
    p, q, fixed, lower = shape
    n, m = len(typed.codes), len(word)
    if n - q - p == 0 and m - q - p == 0:
        return fixed
    if fixed + lower > bound:
        return _INF
    w = [_IDX[c] for c in word]
    if typed.spatial is None and lower > alpha - t.max_rate:
        lower = max(lower, _unmatched_bound(t, typed.codes[p : n - q], w[p : m - q], alpha))
    elif typed.spatial is not None:
        lower = max(lower, _unmatched_touch_bound(t, typed, p, n - q, w[p : m - q], alpha))
    if fixed + lower > bound:
        return _INF
    return fixed + _core(t, typed, w, p, n - q, m - q, alpha, bound - fixed, band)


def _unmatched_bound(t: ChannelTables, xs: list[int], ws: list[int], alpha: float) -> float:
    """Each letter left over after matching the two middles as multisets needs an edit of its own."""
    left: dict[int, int] = {}
    for c in xs:
        left[c] = left.get(c, 0) + 1
    lost = 0.0
    for c in ws:
        if left.get(c):
            left[c] -= 1
        else:
            lost += alpha - t.max_from[c]
    extra = sum(k * (alpha - t.max_into[c]) for c, k in left.items())
    return max(lost, extra)


def _unmatched_touch_bound(
    t: ChannelTables, typed: Typed, lo: int, hi: int, ws: list[int], alpha: float
) -> float:
    """Each meant letter of the middle is dropped or lands on one of the middle's taps."""
    xs = typed.codes[lo:hi]
    left: dict[int, int] = {}
    for c in xs:
        left[c] = left.get(c, 0) + 1
    rows = typed.spatial[lo:hi]
    lost = 0.0
    for c in ws:
        if left.get(c):
            left[c] -= 1
            continue
        best = alpha - t.max_from[c]
        for row in rows:
            if -row[c] < best:
                best = -row[c]
        lost += best - _LOG2
    return lost


def _core(
    t: ChannelTables,
    typed: Typed,
    w: list[int],
    p: int,
    n_end: int,
    m_end: int,
    alpha: float,
    bound: float,
    band: int,
) -> float:
    """Viterbi over taps ``p..n_end`` x word chars ``p..m_end`` (global indices keep the contexts)."""
    x, spatial = typed.codes, typed.spatial
    N, M = n_end - p, m_end - p
    ins, trans, sub, keep = t._ins, t._trans, t._sub, t._keep
    wm = len(w)
    # per column j: the letter p+j-1, the insertion context before letter p+j, dropping letter p+j-1
    col = [-1] + w[p:m_end]
    ins_rows = [ins[w[p + j - 1] if p + j else _BOS] for j in range(M + 1)]
    ins_next = [w[p + j] if p + j < wm else _EOS for j in range(M + 1)]
    dele = t._dele
    drop = [0.0] + [alpha - dele[w[p + j - 2] if p + j >= 2 else _BOS][w[p + j - 1]] for j in range(1, M + 1)]
    D = [[_INF] * (M + 1) for _ in range(N + 1)]
    row = D[0]  # no tap yet: letters dropped
    row[0] = 0.0
    for j in range(1, min(M, band) + 1):
        row[j] = row[j - 1] + drop[j]
    for i in range(1, N + 1):
        up, row = row, D[i]
        r = x[p + i - 1]
        lo = i - band if i > band else 0
        hi = i + band if i + band < M else M
        row_min = _INF
        for j in range(lo, hi + 1):
            best = up[j] + alpha - ins_rows[j][r][ins_next[j]]  # tap inserted before letter p+j
            if j:
                a = col[j]
                if spatial is None:
                    c = up[j - 1] + (-keep[a] if a == r else alpha - sub[a][r])
                else:
                    c = up[j - 1] + _keep_cost(t, typed, p + i - 1, a, alpha)
                if c < best:
                    best = c
                c = row[j - 1] + drop[j]
                if c < best:
                    best = c
                if i >= 2 and j >= 2 and x[p + i - 2] == a and r == col[j - 1]:
                    c = D[i - 2][j - 2] + alpha - trans[col[j - 1]][a]
                    if spatial is not None:
                        c -= spatial[p + i - 2][a] + spatial[p + i - 1][r]
                    if c < best:
                        best = c
            row[j] = best
            if best < row_min:
                row_min = best
        if row_min > bound:
            return _INF
    return D[N][M]


def align(t: ChannelTables, typed: str, word: str, alpha: float) -> list[tuple[str, int, int, int]]:
    """The Viterbi edits turning ``word`` into ``typed``: ``(op, prev, a, b)`` code tuples.

    ``op`` is ``"sub"`` (a -> b), ``"ins"`` (b inserted after prev, before a), ``"del"`` (a dropped
    after prev) or ``"trans"`` (ab -> ba). Used to count edits when estimating the tables.
    """
    x = [_IDX[c] for c in typed]
    w = [_IDX[c] for c in word]
    tt = Typed(typed, x, None)
    N, M = len(x), len(w)
    D = [[_INF] * (M + 1) for _ in range(N + 1)]
    B: list[list[tuple | None]] = [[None] * (M + 1) for _ in range(N + 1)]
    D[0][0] = 0.0
    for i in range(N + 1):
        for j in range(M + 1):
            if i == 0 and j == 0:
                continue
            opts = []
            if i and j:
                opts.append(
                    (D[i - 1][j - 1] + _keep_cost(t, tt, i - 1, w[j - 1], alpha), (i - 1, j - 1, "keep"))
                )
            if i:
                prev, nxt = (w[j - 1] if j else _BOS), (w[j] if j < M else _EOS)
                opts.append((D[i - 1][j] + alpha - t._ins[prev][x[i - 1]][nxt], (i - 1, j, "ins")))
            if j:
                prev = w[j - 2] if j >= 2 else _BOS
                opts.append((D[i][j - 1] + alpha - t._dele[prev][w[j - 1]], (i, j - 1, "del")))
            if i >= 2 and j >= 2 and x[i - 2] == w[j - 1] and x[i - 1] == w[j - 2] and w[j - 1] != w[j - 2]:
                opts.append((D[i - 2][j - 2] + alpha - t._trans[w[j - 2]][w[j - 1]], (i - 2, j - 2, "trans")))
            D[i][j], B[i][j] = min(opts, key=lambda o: o[0])
    edits, i, j = [], N, M
    while (i, j) != (0, 0):
        pi, pj, op = B[i][j]
        if op == "keep" and x[i - 1] != w[j - 1]:
            edits.append(("sub", 0, w[j - 1], x[i - 1]))
        elif op == "ins":
            edits.append(("ins", w[j - 1] if j else _BOS, w[j] if j < M else _EOS, x[i - 1]))
        elif op == "del":
            edits.append(("del", w[j - 2] if j >= 2 else _BOS, w[j - 1], 0))
        elif op == "trans":
            edits.append(("trans", 0, w[j - 2], w[j - 1]))
        i, j = pi, pj
    return edits


def estimate_channel(
    pairs: Iterable[tuple[str, str]],
    *,
    rounds: int = 3,
    alpha: float = 6.0,
    m: float = 10.0,
    layout: KeyboardLayout | None = None,
    source: str = "pairs",
) -> ChannelTables:
    """Edit tables from ``(typed, right)`` misspelling pairs by hard EM (see the module docstring).

    Parameters
    ----------
    pairs : Iterable[tuple[str, str]]
        Real misspellings and their right words, characters in ``ALPHABET``.
    rounds : int
        Align-and-count rounds (default: 3); round 1 aligns under the class-prior tables.
    alpha : float
        Edit cost used while aligning (default: 6.0 nats).
    m : float
        Backoff strength: pseudo-opportunities given to the class rate (default: 10).
    source : str
        Recorded in ``ChannelTables.source`` (say where the pairs came from).
    """
    pairs = [(a, b) for a, b in pairs if a != b]
    if not pairs:
        raise ValueError("estimate_channel needs at least one (typed, right) pair that differ")
    dist = _key_distances(layout or KeyboardLayout())
    tables = ChannelTables.uniform(layout)
    for _ in range(rounds):
        counts = _Counts()
        for typed, right in pairs:
            counts.add_word([_IDX[c] for c in right])
            for op, prev, a, b in align(tables, typed, right, alpha):
                if op == "sub":
                    counts.sub[a, b] += 1
                elif op == "ins":
                    counts.ins[prev, b, a] += 1
                elif op == "del":
                    counts.dele[prev, a] += 1
                else:
                    counts.trans[a, b] += 1
        tables = _tables_from_counts(counts, dist, f"{source}: {len(pairs)} pairs, {rounds} EM rounds", m)
    return tables
