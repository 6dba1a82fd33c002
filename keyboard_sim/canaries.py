"""Secret-sharer canaries (Carlini et al. 2019, arXiv:1802.08232; Ramaswamy et al. 2020, arXiv:2009.10031).

A canary is a sentence ``<prefix> s_1 ... s_k``: a fixed public prefix (``canary_prefix``, "my secret
number is") and a secret of k words drawn uniformly from the vocabulary (``<unk>``, ``<s>`` excluded).
For every cell (c, u) of ``canary_copies`` x ``canary_users``, ``canaries_per_cell`` distinct canaries
are planted, each into the training windows of u devices, c copies in each. The plan is a pure function of the
public ``FederationConfig`` and vocabulary (``plan_canaries``): the runner plants them when it writes the
devices' shards, the benchmark re-derives them to measure exposure. Canaries go to the devices the
seeded sampler picks most often (the same draws as ``DeltaAggregation``), one canary per device while
devices last (so no device's data is mostly canaries), the one-user cells on the most frequent ones.

Exposure (Carlini et al. §4): with the model's log-perplexity of the secret given the prefix,
``exposure = log2 |candidates| - log2 rank(secret)``. The candidate space |V|^k is far too large to
enumerate, so ``exposure`` uses the sampling estimator: rank the secret among R uniformly drawn
alternative secrets (rank 1 = most likely, ties counted against the secret), ``log2(R + 1) - log2(rank)``.
It is at most log2(R + 1); a model that never saw the canary gives E[exposure] = ~1/ln 2 = 1.44 bits.
``exposure_extrapolated`` is Carlini et al.'s §4.3 estimate beyond that cap: fit a normal distribution to
the R alternatives' log-perplexities and take -log2 P(X <= the secret's).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from federation.config import FederationConfig
from keyboard_sim.dataset import UserExamples
from models.data import Examples, line_examples
from models.vocab import Vocabulary

__all__ = [
    "Canary",
    "plan_canaries",
    "plant_canaries",
    "participation",
    "exposure",
    "exposure_extrapolated",
    "candidate_secrets",
]

_FIRST_WORD = 2  # ids 0 (<unk>) and 1 (<s>) are never secret words


@dataclass(frozen=True)
class Canary:
    """One planted canary: its cell, its word ids and the devices (partitions) that hold it."""

    copies: int  # c: copies in each holder's data
    users: int  # u: how many devices hold it
    index: int  # its number within the cell
    prefix: tuple[int, ...]
    secret: tuple[int, ...]
    devices: tuple[int, ...]

    @property
    def cell(self) -> str:
        """The cell's name in the benchmark JSON: "copies=16,users=1"."""
        return f"copies={self.copies},users={self.users}"

    def sentence(self) -> list[int]:
        return [*self.prefix, *self.secret]


def participation(config: FederationConfig) -> list[int]:
    """Rounds each device will be sampled in: the server's seeded draws (``DeltaAggregation._sample_nodes``
    with every device answering the roll call), replayed from the public config."""
    rng = random.Random(config.seed)
    counts = [0] * config.devices
    for _ in range(config.rounds):
        for device in rng.sample(range(config.devices), config.devices_per_round):
            counts[device] += 1
    return counts


def _prefix_ids(config: FederationConfig, index: dict[str, int]) -> tuple[int, ...]:
    words = config.canary_prefix.split()
    missing = [w for w in words if w not in index]
    if not words or missing:
        raise ValueError(
            f"FederationConfig.canary_prefix={config.canary_prefix!r}: {missing or 'no words'} not in the "
            "vocabulary; use words the vocabulary holds"
        )
    return tuple(index[w] for w in words)


def plan_canaries(config: FederationConfig, vocab_words: list[str]) -> list[Canary]:
    """Every canary of ``config`` (empty when ``canary_copies`` is empty), deterministic in the config."""
    if not config.canary_copies:
        return []
    prefix = _prefix_ids(config, {w: i for i, w in enumerate(vocab_words)})
    counts = participation(config)
    cells = [(c, u) for u in sorted(config.canary_users) for c in sorted(config.canary_copies, reverse=True)]
    slots = sum(u for _, u in cells) * config.canaries_per_cell
    pool = sorted(range(config.devices), key=lambda d: (-counts[d], d))[: min(config.devices, slots)]
    rng = np.random.default_rng([config.seed, 0xCA7A])
    canaries, start = [], 0
    for copies, users in cells:  # one-user cells first: they get the devices sampled most often
        if users > len(pool):
            raise ValueError(f"FederationConfig.canary_users={users} exceeds devices={config.devices}")
        for i in range(config.canaries_per_cell):
            secret = tuple(
                int(w) for w in rng.integers(_FIRST_WORD, len(vocab_words), config.canary_secret_words)
            )
            holders = tuple(sorted(pool[(start + r) % len(pool)] for r in range(users)))
            start += users
            canaries.append(Canary(copies, users, i, prefix, secret, holders))
    return canaries


def plant_canaries(
    config: FederationConfig, partition: int, user: UserExamples, vocab_words: list[str]
) -> UserExamples:
    """``user`` with every canary planned for device ``partition`` added to its training windows."""
    mine = [c for c in plan_canaries(config, vocab_words) if partition in c.devices]
    if not mine:
        return user
    context = user.train.x.shape[1]
    lines = ([c.sentence()] for c in mine for _ in range(c.copies))  # one sentence a line: any scope
    planted = line_examples(lines, context, Vocabulary.bos_id)
    return UserExamples(user.user_id, Examples.concat([user.train, planted], context), user.later)


def candidate_secrets(canary: Canary, n: int, vocab_size: int, seed: int) -> np.ndarray:
    """(n + 1, k) secrets: the canary's own (row 0) and n alternatives drawn like it was."""
    rng = np.random.default_rng([seed, 0x5EC2, *canary.secret])
    others = rng.integers(_FIRST_WORD, vocab_size, (n, len(canary.secret)))
    return np.vstack([np.asarray(canary.secret)[None, :], others])


def exposure_extrapolated(scores: np.ndarray) -> float:
    """-log2 Phi((x_0 - mu) / sd), mu and sd of the alternatives ``scores[1:]`` (Carlini et al. §4.3)."""
    from scipy.stats import norm

    mu, sd = float(np.mean(scores[1:])), float(np.std(scores[1:], ddof=1))
    return float(-norm.logcdf((scores[0] - mu) / sd) / np.log(2.0))


def exposure(scores: np.ndarray) -> float:
    """log2(R + 1) - log2(rank) of row 0 among ``scores`` (log-perplexities, lower = more likely)."""
    rank = 1 + int(np.sum(scores[1:] <= scores[0]))
    return float(np.log2(len(scores)) - np.log2(rank))
