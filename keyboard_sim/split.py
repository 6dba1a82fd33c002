"""Deterministic, seeded splits: public / train / held-out users, and each user's time split.

- **public**: whole groups (plays) whose text is treated as public — the vocabulary and the
  optional warm-start pretraining come from here. Corpora without groups (JSONL) use a fraction
  of users instead.
- **train / held-out**: the remaining users, assigned by a keyed hash of (seed, user id), so a
  user's side never depends on which other users are present or on their order. Evaluation
  only ever uses held-out users.
- **local split**: per user, the first ~80% of lines (time order) are for training, the last ~20%
  are kept back to evaluate personalization on what the user types *later*.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from keyboard_sim.corpus import UserText

__all__ = ["SplitConfig", "UserSplit", "split_users", "local_split"]


@dataclass
class SplitConfig:
    """How users are split; all fields are seeded and deterministic."""

    seed: int = 0
    public_groups: int = 6  # whole plays made public (vocabulary + pretraining); 6 of 38 by default
    public_fraction: float = 0.15  # used instead when users carry no group (JSONL corpora)
    heldout_fraction: float = 0.2  # of the non-public users
    later_fraction: float = 0.2  # of each user's lines, kept for personalization evaluation

    def __post_init__(self) -> None:
        if self.public_groups < 0:
            raise ValueError(f"SplitConfig.public_groups must be >= 0, got {self.public_groups}")
        for name in ("public_fraction", "heldout_fraction", "later_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"SplitConfig.{name} must be in [0, 1), got {value}")


@dataclass
class UserSplit:
    """Disjoint lists of users."""

    public: list[UserText]
    train: list[UserText]
    heldout: list[UserText]


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_users(users: list[UserText], config: SplitConfig | None = None) -> UserSplit:
    """Split ``users`` into public / train / held-out (disjoint, deterministic for a seed)."""
    config = config or SplitConfig()
    ids = [u.user_id for u in users]
    if len(set(ids)) != len(ids):
        raise ValueError("user ids must be unique")
    groups = sorted({u.group for u in users if u.group})
    if groups:
        chosen = set(random.Random(config.seed).sample(groups, min(config.public_groups, len(groups))))
        is_public = {u.user_id: u.group in chosen for u in users}
    else:
        is_public = {
            u.user_id: _unit_hash(config.seed, "public/" + u.user_id) < config.public_fraction for u in users
        }
    public = [u for u in users if is_public[u.user_id]]
    rest = [u for u in users if not is_public[u.user_id]]
    heldout = [u for u in rest if _unit_hash(config.seed, "heldout/" + u.user_id) < config.heldout_fraction]
    held_ids = {u.user_id for u in heldout}
    train = [u for u in rest if u.user_id not in held_ids]
    return UserSplit(public=public, train=train, heldout=heldout)


def local_split(lines: list[str], later_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """(earlier, later) lines of one user in time order; ``later`` is the last ~``later_fraction``.

    A user with a single line keeps it in ``earlier``.
    """
    n_later = min(int(round(len(lines) * later_fraction)), max(len(lines) - 1, 0))
    cut = len(lines) - n_later
    return lines[:cut], lines[cut:]
