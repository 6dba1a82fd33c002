"""Shared fixtures: a small, self-made corpus (tests never download data)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from keyboard_sim.corpus import UserText
from keyboard_sim.dataset import save_jsonl

_SUBJECTS = ["the king", "my lord", "the queen", "good sir", "the fool", "thy father", "our master"]
_VERBS = ["doth love", "hath seen", "will speak to", "shall follow", "did betray", "must answer"]
_OBJECTS = ["the crown", "his daughter", "the ghost", "this night", "my sword", "the people"]


def make_users(n_users: int = 60, lines_per_user: int = 12, seed: int = 0) -> list[UserText]:
    """Users who speak a tiny grammar, each with a preferred subject (non-IID, learnable)."""
    rng = random.Random(seed)
    users = []
    for i in range(n_users):
        favourite = _SUBJECTS[i % len(_SUBJECTS)]
        lines = []
        for _ in range(lines_per_user):
            subject = favourite if rng.random() < 0.6 else rng.choice(_SUBJECTS)
            lines.append(f"{subject.capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}.")
        users.append(UserText(f"user{i:03d}", lines))
    return users


@pytest.fixture
def small_users() -> list[UserText]:
    """60 grammar users (no groups: the public split is a fraction of users)."""
    return make_users()


@pytest.fixture
def small_jsonl(tmp_path: Path, small_users: list[UserText]) -> Path:
    """The same users as a bring-your-own JSONL corpus."""
    path = tmp_path / "corpus.jsonl"
    save_jsonl(small_users, path)
    return path
