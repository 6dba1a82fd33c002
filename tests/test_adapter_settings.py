"""Choosing the user adapter's settings on train users (the per-sentence policy) and recording them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from hushtype import adapter_settings as st
from hushtype.cli import main
from keyboard_sim.corpus import UserText
from keyboard_sim.dataset import DataConfig, save_jsonl
from keyboard_sim.device_cache import DeviceCacheConfig
from keyboard_sim.personalize import CacheAdapterConfig
from models.release import load_release

V = 8  # ids 0 <unk>, 1 <s>, 2..7 words


def _user(later_y: list[int], later_prev: list[int]) -> st.AdapterUser:
    logits = np.tile(np.linspace(1.5, 0.0, V), (len(later_y), 1))  # ranks 2, 3, 4 first; 7 0.64 behind
    no_history = np.zeros(V)
    empty = np.zeros(0, np.int64)
    return st.AdapterUser(
        no_history, no_history, logits, np.asarray(later_y), np.asarray(later_prev), empty, empty
    )


def test_running_statistics_per_sentence_and_per_word() -> None:
    user = _user([7, 7, 7], [1, 7, 1])  # two sentences: [7 7] [7]
    c, _ = st.running_statistics(user.counts, user.expected, user.later_logits, user.later_y, user.later_prev)
    assert c[:, 7].tolist() == [0, 0, 2]  # the second sentence sees the first, not its own words
    c, e = st.running_statistics(
        user.counts, user.expected, user.later_logits, user.later_y, user.later_prev, per_word=True
    )
    assert c[:, 7].tolist() == [0, 1, 2]
    assert e[0].sum() == 0 and 1.0 < e[2].sum() < 2.0  # the model's mass on words, <unk>/<s> left out


def test_the_chosen_settings_are_the_ones_that_bring_a_repeated_word_up() -> None:
    # one 7 per sentence: only scale 1 and prior 1 lift it past the third word from the next sentence on
    users = [_user([7, 7, 7, 7], [1, 1, 1, 1])]
    assert st.per_sentence_top3(users[0], CacheAdapterConfig(scale=1.0, prior=1.0)) == 0.75
    assert st.per_sentence_top3(users[0], CacheAdapterConfig(scale=0.25, prior=8.0)) == 0.0
    assert st.choose_adapter_config(users) == CacheAdapterConfig(scale=1.0, prior=1.0)


def test_the_device_cache_is_chosen_when_the_user_repeats_a_pair() -> None:
    # "6 7" is typed three times; the model ranks 6 and 7 last; the bigram cache knows them after the first
    user = _user([6, 7, 6, 7, 6, 7], [1, 6, 1, 6, 1, 6])
    unigram, rows, seen = st.device_cache_parts(user)
    assert seen.tolist() == [False, False, True, True, True, True]  # (<s> -> 6), then (6 -> 7) known
    assert rows[5, 7] == 1.0 and unigram[2, 6] == unigram[2, 7] == 0.5
    adapter = CacheAdapterConfig(scale=0.25, prior=8.0)  # too weak to move 7 up by itself
    p = st.personalized(user, adapter)
    assert st.with_device_cache_top3(user, p, DeviceCacheConfig()) == 0.0
    assert st.with_device_cache_top3(user, p, DeviceCacheConfig(0.0, 0.3)) == 4 / 6
    assert st.choose_device_cache([user], adapter).bigram_weight > 0


def _corpus(path: Path) -> Path:
    rng = random.Random(0)
    users = []
    for i in range(40):
        mine = f"w{10 + i % 7}"
        lines = [
            " ".join(rng.choice([mine, mine, f"w{rng.randint(2, 60)}"]) for _ in range(6)) for _ in range(20)
        ]
        users.append(UserText(f"u{i}", [line + "." for line in lines]))
    save_jsonl(users, path)
    return path


def test_record_writes_the_card_and_the_cli_prints_it(small_release: Path, tmp_path: Path) -> None:
    release = tmp_path / "release"
    shutil.copytree(small_release, release)
    corpus = _corpus(tmp_path / "corpus.jsonl")
    settings = st.record_adapter_settings(
        str(release), DataConfig(source="jsonl", jsonl_path=str(corpus)), users=5
    )
    card = load_release(release).card
    assert card["personalization"] == settings and settings["policy"] == "per_sentence"
    assert settings["scale"] in st.SCALES and settings["prior"] in st.PRIORS
    assert settings["chosen_on"].startswith("5 train users")
    assert card["version"] == load_release(small_release).version
    assert CacheAdapterConfig.from_card(card) == CacheAdapterConfig(
        scale=settings["scale"], prior=settings["prior"]
    )


def test_cli_names_the_bad_flag(small_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["adapter-settings", "--release", str(small_release), "--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err
    assert main(["adapter-settings", "--release", str(tmp_path / "missing")]) == 2
    assert "not a hushtype release" in capsys.readouterr().err


def test_old_cards_fall_back_to_the_defaults_and_bad_ones_are_refused() -> None:
    assert CacheAdapterConfig.from_card({"model": {}}) == CacheAdapterConfig()
    with pytest.raises(ValueError, match="personalization"):
        CacheAdapterConfig.from_card({"personalization": {"scale": -1}})
    assert json.dumps(CacheAdapterConfig().to_card())
