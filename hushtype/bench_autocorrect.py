"""``hushtype bench autocorrect``: our noisy-channel autocorrect beside SymSpell, on data it did not generate.

One run, one correction vocabulary (the top ``vocab_size`` typable words of symspellpy's English
frequency list plus the release's words), one set of unigram counts, given to both correctors:

- **(b) real human misspellings**: the *evaluation* part of codespell 2.4.3's ``dictionary.txt``
  (``keyboard_sim.misspellings``; split by a hash of the right word, the *tuning* part estimated
  the channel's edit rates), pairs whose right word is in the correction vocabulary, up to
  ``human_pairs`` of them (seeded sample). Top-1 accuracy of ours on the typed characters
  (``human_accuracy``), ours on taps at the centres of the typed keys (``human_accuracy_taps``),
  and ``symspellpy.SymSpell.lookup`` (max edit distance 2, ``Verbosity.TOP``, unknown words kept)
  (``human_accuracy_symspell``). Both use the unigram prior: no context exists for these pairs.
- **(a) held-out users' lines typed on the touch simulator**: every word of the lines (typable
  characters, in or out of any vocabulary) tapped by a typist with touch noise ``sigma`` and
  skip/double rates; the letters a plain keyboard registers (nearest letter key: within a word a
  tap never means space) give ``touch_wer_raw``; SymSpell on those letters ``touch_wer_symspell``;
  ours on the taps with the release's next-word model as prior ``touch_wer`` (any model kind:
  ``models.factory.plaintext_logits``, the logits a device decrypts; and with the same
  unigram prior as SymSpell: ``touch_wer_unigram``). WER here is the fraction of words output
  wrong (segmentation is given).
- ``false_correction_rate``: of the touch words whose letters registered right and that are in the
  correction vocabulary, the fraction ours changed.
- ``keystroke_savings``: held-out words typed letter by letter without noise; before each letter
  the 3-slot strip shows the most probable words with the typed prefix under the model's prior
  (next-word predictions before the first letter); a word in the strip costs one tap instead of
  its remaining letters and the space. ``1 - taps / (letters + spaces)``.
- ``ms_per_word`` / ``ms_per_word_symspell``: mean decode time over the human and touch items,
  one core, same process, measured as this process' CPU time (``time.process_time``): on a shared
  machine wall time also counts other people's processes. Read their ratio as well.

Today's fields are kept: ``naive_word_accuracy``, ``spatial_word_accuracy`` (ours, unigram prior)
and ``lm_word_accuracy`` (ours, model prior) on the touch words in the release's vocabulary;
``lm_weight`` chosen on train users' lines (never held-out ones) unless given: the lowest WER
among the weights that change at most 1% of the train words typed right.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from keyboard_sim.autocorrect import (
    AutocorrectConfig,
    Autocorrector,
    codespell_channel,
    correction_vocabulary,
)
from keyboard_sim.corpus import UserText, load_users
from keyboard_sim.dataset import DataConfig
from keyboard_sim.federation import data_config_of
from keyboard_sim.misspellings import Misspelling, load_codespell_pairs, split_pairs
from keyboard_sim.split import split_users
from keyboard_sim.touch import TouchModel, TypistConfig
from models.data import line_examples
from models.factory import plaintext_logits
from models.release import Release, load_release
from models.tokenizer import tokenize_sentences

__all__ = ["LM_WEIGHT_GRID", "TypedWord", "run_autocorrect_bench", "typed_words", "symspell_for"]

LM_WEIGHT_GRID: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)


@dataclass
class TypedWord:
    """One intended word, its model context and the taps typed for it."""

    word: str
    context: np.ndarray  # (k,) ids, oldest first
    taps: np.ndarray  # (n, 2) key widths
    registered: str  # the nearest letter key of every tap
    in_lm: bool


def _user_rng(seed: int, user_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00autocorrect-bench\x00{user_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _spread(users: Sequence[UserText], max_users: int | None) -> list[UserText]:
    """``max_users`` users evenly spaced through the list (the corpus lists users play by play)."""
    if max_users is None or max_users >= len(users):
        return list(users)
    picks = np.unique(np.linspace(0, len(users) - 1, max_users).round().astype(int))
    return [users[i] for i in picks]


def _user_words(user: UserText, release: Release, context: int) -> Iterator[tuple[str, list[int]]]:
    """(word, context ids) of the user's words, lines and sentences in order."""
    vocab = release.vocab
    for line in user.lines:
        sentences = tokenize_sentences(line)
        ids = [vocab.encode_words(words) for words in sentences]
        windows = line_examples([ids], context, vocab.bos_id, release.context_scope)
        yield from zip((word for words in sentences for word in words), windows.x.tolist(), strict=True)


def typed_words(
    users: Sequence[UserText],
    release: Release,
    touch: TouchModel,
    *,
    max_words: int,
    seed: int = 0,
) -> tuple[list[TypedWord], int]:
    """Up to ``max_words`` typed words, an even share per user; returns them and the users who typed."""
    if not users:
        return [], 0
    per_user = max(1, max_words // len(users))
    k = release.config.context
    out: list[TypedWord] = []
    contributed = 0
    for user in users:
        rng = _user_rng(seed, user.user_id)
        n = 0
        for word, ctx in _user_words(user, release, k):
            if n >= per_user or len(out) >= max_words:
                break
            if not touch.layout.supports(word) or word.startswith("'"):
                continue
            typed = touch.sample(word, rng)
            if len(typed.taps) == 0:
                continue  # every letter skipped
            in_lm = word in release.vocab
            out.append(TypedWord(word, np.asarray(ctx, np.int64), typed.taps, "", in_lm))
            n += 1
        contributed += n > 0
    return out, contributed


def _lm_logprobs(release: Release, contexts: np.ndarray, chunk: int = 512) -> Iterator[np.ndarray]:
    """Log-softmax of the released model's logits (any model kind; ``<s>`` excluded), one ``(V,)`` row
    per context: ``models.factory.plaintext_logits``, what a device decrypts from the encrypted service."""
    for start in range(0, len(contexts), chunk):
        ids = contexts[start : start + chunk]
        z = plaintext_logits(release.weights, release.config, ids).astype(np.float64)
        z[:, release.vocab.bos_id] = -np.inf
        z = z - z.max(axis=1, keepdims=True)
        yield from z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def symspell_for(ac: Autocorrector):
    """SymSpell over exactly the autocorrector's words and counts."""
    from symspellpy import SymSpell

    sym = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
    for word, count in zip(ac.words, ac.counts, strict=True):
        sym.create_dictionary_entry(word, max(int(count), 1))
    return sym


def _symspell_word(sym, typed: str) -> str:
    from symspellpy import Verbosity

    found = sym.lookup(typed, Verbosity.TOP, max_edit_distance=2, include_unknown=True)
    return found[0].term if found else typed


def _check_split(release: Release, config: DataConfig) -> None:
    """Refuse data split differently from the release's training data (held-out users would leak)."""
    trained_on = release.card.get("data")
    if not trained_on:
        return
    ours = {"source": config.source, "split": asdict(config.split)}
    theirs = {"source": trained_on.get("source"), "split": _trained_split(trained_on)}
    if ours != theirs:
        raise ValueError(
            f"the release was trained on data split as {theirs}, this run splits as {ours}: "
            "its held-out users would not be held out"
        )


def _trained_split(trained_on: dict) -> dict | None:
    """The split a release card names: a pretrained or central card records it whole, a federated one
    its run's data fields (``split_seed``: ``keyboard_sim.federation.data_config_of``)."""
    if "split" in trained_on:
        return trained_on["split"]
    if "split_seed" in trained_on:
        return asdict(data_config_of(trained_on).split)
    return None


class _Clock:
    """Accumulated decode time and count of one corrector."""

    def __init__(self) -> None:
        self.seconds, self.words = 0.0, 0

    def ms(self) -> float:
        return 1000 * self.seconds / max(self.words, 1)


def _human(ac: Autocorrector, sym, pairs: Sequence[Misspelling], ours: _Clock, theirs: _Clock) -> dict:
    hits = taps_hits = sym_hits = 0
    for pair in pairs:
        t0 = time.process_time()
        hits += ac.correct(pair.typed, top_k=1).word == pair.right
        t1 = time.process_time()
        sym_hits += _symspell_word(sym, pair.typed) == pair.right
        t2 = time.process_time()
        taps_hits += ac.correct(ac.layout.key_centres(pair.typed), top_k=1).word == pair.right
        ours.seconds += t1 - t0
        theirs.seconds += t2 - t1
    ours.words += len(pairs)
    theirs.words += len(pairs)
    n = max(len(pairs), 1)
    return {"ours": hits / n, "taps": taps_hits / n, "symspell": sym_hits / n}


def _touch(
    ac: Autocorrector,
    sym,
    words: Sequence[TypedWord],
    release: Release,
    lm_weights: Sequence[float],
    ours: _Clock | None = None,
    theirs: _Clock | None = None,
) -> dict:
    """Word error rates of raw letters, SymSpell, ours (unigram prior, model prior per weight)."""
    raw = symspell = unigram = 0
    lm = np.zeros(len(lm_weights))
    kept_right = np.zeros(len(lm_weights))
    right_typed = 0
    in_lm = naive_lm = unigram_lm = 0
    lm_in = np.zeros(len(lm_weights))
    contexts = (
        np.stack([w.context for w in words]) if words else np.zeros((0, release.config.context), np.int64)
    )
    base = ac.config.prior_weight
    for typed, logp in zip(words, _lm_logprobs(release, contexts), strict=True):
        t0 = time.process_time()
        registered = ac.typed(typed.taps)
        t1 = time.process_time()
        sym_out = _symspell_word(sym, registered.chars)
        t2 = time.process_time()
        uni = ac.correct(typed.taps, top_k=1).word
        outs = []
        for j, weight in enumerate(lm_weights):
            ac.config.prior_weight = weight
            t3 = time.process_time()
            out = ac.correct(typed.taps, logp, top_k=1)
            if ours is not None and j == 0:
                ours.seconds += time.process_time() - t3 + (t1 - t0)
                ours.words += 1
            outs.append(out.word)
        ac.config.prior_weight = base
        if theirs is not None:
            theirs.seconds += t2 - t1
            theirs.words += 1
        ok = [o == typed.word for o in outs]
        raw += registered.chars != typed.word
        symspell += sym_out != typed.word
        unigram += uni != typed.word
        lm += [not o for o in ok]
        if registered.chars == typed.word and typed.word in ac.ids:
            right_typed += 1
            kept_right += [o == typed.word for o in outs]
        if typed.in_lm:
            in_lm += 1
            naive_lm += registered.chars == typed.word
            unigram_lm += uni == typed.word
            lm_in += ok
    n, m = max(len(words), 1), max(in_lm, 1)
    return {
        "raw": raw / n,
        "symspell": symspell / n,
        "unigram": unigram / n,
        "lm": (lm / n).tolist(),
        "false_correction_rate": (1 - kept_right / max(right_typed, 1)).tolist(),
        "right_typed": right_typed,
        "naive_in_lm": naive_lm / m,
        "unigram_in_lm": unigram_lm / m,
        "lm_in_lm": (lm_in / m).tolist(),
        "in_lm": in_lm,
    }


def _keystroke_savings(ac: Autocorrector, words: Sequence[TypedWord], release: Release) -> float:
    """``1 - taps / (letters + spaces)`` with the 3-slot strip (see the module docstring)."""
    taps = full = 0
    contexts = (
        np.stack([w.context for w in words]) if words else np.zeros((0, release.config.context), np.int64)
    )
    for typed, logp in zip(words, _lm_logprobs(release, contexts), strict=True):
        prior = ac.prior(logp)
        word = typed.word
        full += len(word) + 1
        cost = len(word) + 1
        for k in range(len(word)):
            if word in ac.complete(word[:k], prior, 3):
                cost = k + 1
                break
        taps += cost
    return 1 - taps / max(full, 1)


def _pick_weight(wer: Sequence[float], fcr: Sequence[float], max_fcr: float = 0.01) -> float:
    """The grid weight with the lowest WER among those changing <= ``max_fcr`` of right words."""
    allowed = [j for j, f in enumerate(fcr) if f <= max_fcr] or [int(np.argmin(fcr))]
    return LM_WEIGHT_GRID[min(allowed, key=lambda j: wer[j])]


def run_autocorrect_bench(
    release_dir: str,
    *,
    data_config: DataConfig | None = None,
    sigma: float = 0.4,
    skip_rate: float = 0.005,
    double_rate: float = 0.005,
    max_users: int | None = 200,
    max_words: int = 4000,
    human_pairs: int = 3000,
    vocab_size: int | None = None,
    lm_weight: float | None = None,
    sweep_users: int = 100,
    sweep_words: int = 1000,
    keystroke_words: int = 1500,
    seed: int = 0,
) -> dict:
    """Ours vs SymSpell on codespell's evaluation part and on simulated touch typing: one JSON-ready dict.

    Parameters
    ----------
    release_dir : str
        A release directory (``models.release``): its next-word model is the prior.
    data_config : DataConfig | None
        Corpus and split (default: ``DataConfig()``); must split like the release's training data.
    sigma, skip_rate, double_rate : float
        The typists' touch noise (key widths) and per-letter skip / double-tap rates (default:
        0.4, 0.005, 0.005). The keyboard believes ``AutocorrectConfig.sigma``, not this.
    max_users, max_words : int
        Held-out users (evenly spaced; None: all) and typed words shared evenly (default: 200, 4000).
    human_pairs : int
        Codespell evaluation pairs scored (seeded sample; default: 3000; 0: all).
    vocab_size : int | None
        Words from symspellpy's list (default: ``AutocorrectConfig.vocab_size``).
    lm_weight : float | None
        Weight of the model prior; None (default) picks it from ``LM_WEIGHT_GRID`` on train users
        (lowest WER with at most 1% false corrections there).
    sweep_users, sweep_words : int
        Train users and words of that sweep (default: 100 and 1000).
    keystroke_words : int
        Held-out words of the keystroke-savings simulation (default: 1500).
    seed : int
        Seed of the taps and of the pair sample.
    """
    start = time.perf_counter()
    config = data_config or DataConfig()
    release = load_release(release_dir)
    _check_split(release, config)
    ac_config = AutocorrectConfig() if vocab_size is None else AutocorrectConfig(vocab_size=vocab_size)
    words, counts = correction_vocabulary(ac_config.vocab_size)
    channel = codespell_channel(config.cache_dir)
    ac = Autocorrector(words, counts, channel, ac_config, lm_words=release.vocab.words)
    sym = symspell_for(ac)
    split = split_users(load_users(config.source, config.jsonl_path, config.cache_dir), config.split)
    touch = TouchModel(TypistConfig(sigma=sigma, skip_rate=skip_rate, double_rate=double_rate))
    ours, theirs = _Clock(), _Clock()

    pairs = [p for p in split_pairs(load_codespell_pairs(config.cache_dir), "eval") if p.right in ac.ids]
    if human_pairs and len(pairs) > human_pairs:
        pairs = random.Random(seed).sample(pairs, human_pairs)
    human = _human(ac, sym, pairs, ours, theirs)

    sweep: dict[str, float] = {}
    sweep_fcr: dict[str, float] = {}
    if lm_weight is None:
        train_words, _ = typed_words(
            _spread(split.train, sweep_users), release, touch, max_words=sweep_words, seed=seed
        )
        if not train_words:
            raise ValueError("no words in train users' lines to choose lm_weight on")
        res = _touch(ac, sym, train_words, release, LM_WEIGHT_GRID)
        sweep = {str(w): 1 - e for w, e in zip(LM_WEIGHT_GRID, res["lm"], strict=True)}
        sweep_fcr = dict(zip(map(str, LM_WEIGHT_GRID), res["false_correction_rate"], strict=True))
        lm_weight = _pick_weight(res["lm"], res["false_correction_rate"])

    held, users = typed_words(
        _spread(split.heldout, max_users), release, touch, max_words=max_words, seed=seed
    )
    if not held:
        raise ValueError("no typable words in held-out users' lines")
    res = _touch(ac, sym, held, release, [lm_weight], ours, theirs)
    ac.config.prior_weight = lm_weight
    savings = _keystroke_savings(ac, held[:keystroke_words], release)
    return {
        "release": str(release_dir),
        "model_version": release.version,
        "human_accuracy": human["ours"],
        "human_accuracy_symspell": human["symspell"],
        "human_accuracy_taps": human["taps"],
        "human_pairs": len(pairs),
        "human_source": "codespell 2.4.3 dictionary.txt, evaluation part (70% by hash of the right word)",
        "touch_wer": res["lm"][0],
        "touch_wer_symspell": res["symspell"],
        "touch_wer_unigram": res["unigram"],
        "touch_wer_raw": res["raw"],
        "false_correction_rate": res["false_correction_rate"][0],
        "false_correction_words": res["right_typed"],
        "ms_per_word": ours.ms(),
        "ms_per_word_symspell": theirs.ms(),
        "keystroke_savings": savings,
        "keystroke_words": min(keystroke_words, len(held)),
        "naive_word_accuracy": res["naive_in_lm"],
        "spatial_word_accuracy": res["unigram_in_lm"],
        "lm_word_accuracy": res["lm_in_lm"][0],
        "lm_weight": float(lm_weight),
        "lm_weight_sweep_train": sweep,
        "lm_weight_sweep_train_false_corrections": sweep_fcr,
        "sigma": float(sigma),
        "skip_rate": float(skip_rate),
        "double_rate": float(double_rate),
        "words": len(held),
        "words_in_lm": res["in_lm"],
        "users": users,
        "vocab_size": len(release.vocab),
        "correction_vocab_size": len(ac),
        "channel_source": channel.source,
        "decoder": asdict(ac.config),
        "seconds": time.perf_counter() - start,
    }
