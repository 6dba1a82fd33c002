"""Shared fixtures: a small, self-made corpus (tests never download data)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from keyboard_sim.corpus import UserText
from keyboard_sim.dataset import save_jsonl
from models.nplm import NPLM, ModelConfig, export_weights
from models.release import save_release
from models.vocab import BOS, UNK, Vocabulary

WORDS = [UNK, BOS] + [f"w{i}" for i in range(62)]
SMALL = ModelConfig(vocab_size=64, context=4, embed_dim=8, hidden=32, dropout=0.0)  # k*d = 32: powers of two


def build_small_release(out: Path) -> Path:
    """A V=64 release whose logits are spread like a trained model's (std ~1), so top-k is meaningful."""
    torch.manual_seed(0)
    weights = export_weights(NPLM(SMALL))
    rng = np.random.default_rng(0)
    weights["embedding"] = rng.normal(0, 0.5, weights["embedding"].shape).astype(np.float32)
    weights["w1"] = rng.normal(0, 0.6 / np.sqrt(32), weights["w1"].shape).astype(np.float32)
    weights["w2"] = rng.normal(0, 1.5 / np.sqrt(32), weights["w2"].shape).astype(np.float32)
    save_release(out, weights, SMALL, Vocabulary(WORDS), {"trained": "test fixture", "epsilon": None})
    return out


@pytest.fixture(scope="session")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small released model (see ``build_small_release``), built once per test session."""
    return build_small_release(tmp_path_factory.mktemp("release"))


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
