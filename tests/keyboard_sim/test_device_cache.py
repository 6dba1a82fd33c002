"""The device's cache LM: counts of what the user typed here, mixed into the decrypted distribution."""

from __future__ import annotations

import numpy as np
import pytest

from keyboard_sim.device_cache import DeviceCache, DeviceCacheConfig, mix_cache

V = 8  # 0 <unk>, 1 <s>, 2..7 words


def test_counts_and_distributions_on_known_numbers() -> None:
    cache = DeviceCache(V, DeviceCacheConfig(0.2, 0.3))
    cache.add_sentence([2, 5, 0, 5])  # <unk> (0) is never counted as a word, but is a previous word
    unigram, row, seen = cache.distributions(prev=2)
    np.testing.assert_allclose(unigram, [0, 0, 1 / 3, 0, 0, 2 / 3, 0, 0])
    assert seen and row[5] == 1.0
    _, row, seen = cache.distributions(prev=0)
    assert seen and row[5] == 1.0
    _, row, seen = cache.distributions(prev=7)
    assert not seen and row.sum() == 0
    # words typed in the text field count before they are sent, sentences split by <s>
    unigram, row, seen = cache.distributions(prev=7, pending=[7, 3, 1, 7, 6])
    assert seen and row[3] == row[6] == 0.5 and unigram[7] == pytest.approx(2 / 7)


def test_mix_moves_a_cached_bigram_into_the_top() -> None:
    p = np.linspace(1.0, 0.1, V)
    p /= p.sum()  # the model ranks 2, 3, 4 first and 7 last
    cache = DeviceCache(V, DeviceCacheConfig(0.0, 0.3))
    cache.add_sentence([6, 7])  # the user typed 7 after 6
    mixed = cache.mix(p, prev=6)
    assert np.argmax(mixed[2:]) + 2 == 7 and mixed.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(cache.mix(p, prev=3), p)  # no row for 3: the unigram weight is 0
    np.testing.assert_allclose(DeviceCache(V).mix(p, prev=6), p)  # weights 0: off
    rows = mix_cache(
        np.stack([p, p]), np.zeros(V), np.stack([np.eye(V)[7]] * 2), np.array([1, 0]), cache.config
    )
    np.testing.assert_allclose(rows[1], p)  # the second row's previous word has no bigram row
    assert rows[0, 7] == pytest.approx(0.7 * p[7] + 0.3)


def test_config_checks_and_the_card() -> None:
    with pytest.raises(ValueError, match="< 1"):
        DeviceCacheConfig(0.6, 0.5)
    with pytest.raises(ValueError, match="bigram_weight"):
        DeviceCacheConfig(0.0, -0.1)
    assert not DeviceCacheConfig.from_card({}).enabled  # old cards: no cache
    card = {"personalization": {"scale": 1.0, "device_cache": {"unigram_weight": 0.05, "bigram_weight": 0.1}}}
    assert DeviceCacheConfig.from_card(card) == DeviceCacheConfig(0.05, 0.1)
    with pytest.raises(ValueError, match="device_cache"):
        DeviceCacheConfig.from_card({"personalization": {"device_cache": {"bigram_weight": "x"}}})
