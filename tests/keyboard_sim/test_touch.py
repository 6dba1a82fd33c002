"""QWERTY touch model: exact at zero noise, seeded, errors grow with noise, clear errors on bad input."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyboard_sim.touch import (
    SUPPORTED_CHARS,
    KeyboardLayout,
    LayoutConfig,
    PopulationConfig,
    TouchModel,
    Typist,
    TypistConfig,
    UnsupportedCharacterError,
    draw_typist_config,
    edit_distance,
    error_rates,
)

TEXT = (
    "to be or not to be that is the question whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune o'er the hills"
)


def test_every_supported_character_has_a_key_and_registers_itself() -> None:
    layout = KeyboardLayout()
    assert sorted(layout.chars) == sorted(SUPPORTED_CHARS)
    assert set("abcdefghijklmnopqrstuvwxyz' ") <= set(layout.chars)
    assert layout.hit_test(layout.centres) == layout.chars  # a tap on a key centre registers that key


def test_geometry_is_staggered_qwerty() -> None:
    layout = KeyboardLayout(LayoutConfig(key_height=1.5))
    q, a, z, space = (layout.key_centres(c)[0] for c in "qaz ")
    assert q.tolist() == [0.5, 0.75] and a.tolist() == [1.0, 2.25] and z.tolist() == [2.0, 3.75]
    assert space.tolist() == [5.0, 5.25]
    # a tap on the space bar far from its centre still registers space (rectangle hit test)
    assert layout.hit_test(np.array([[3.0, 5.4], [7.2, 5.0]])) == "  "
    # a tap off the keyboard registers the nearest key
    assert layout.hit_test(np.array([[-3.0, 0.7], [20.0, 0.7]])) == "qp"


def test_zero_noise_reproduces_text_exactly() -> None:
    typed = Typist(TypistConfig(sigma=0.0), seed=0).type_text(TEXT)
    assert typed.registered == TEXT == typed.aimed
    assert typed.taps.shape == (len(TEXT), 2)
    assert [len(w) for w in typed.word_taps()] == [len(w) for w in TEXT.split()]


def test_small_noise_inside_keys_reproduces_text() -> None:
    # sigma 0.05: P(|noise| > 0.5) per axis is ~1e-23
    typed = Typist(TypistConfig(sigma=0.05), seed=3).type_text(TEXT)
    assert typed.registered == TEXT


def test_error_rate_grows_with_noise() -> None:
    cers, wers = [], []
    for sigma in (0.0, 0.2, 0.4, 0.6):
        typist = Typist(TypistConfig(sigma=sigma), seed=7)
        rates = error_rates([typist.type_text(TEXT) for _ in range(15)])  # ~2.1k taps per sigma
        cers.append(rates.cer)
        wers.append(rates.wer)
    assert cers[0] == 0.0 and wers[0] == 0.0
    assert all(b > a for a, b in zip(cers, cers[1:], strict=False)), cers
    assert all(b > a for a, b in zip(wers, wers[1:], strict=False)), wers
    assert 0.003 < cers[1] < 0.05 and cers[3] > 0.25  # measured: 0.008, 0.19, 0.40


def test_skip_and_double_rates_change_tap_counts() -> None:
    typist = Typist(TypistConfig(sigma=0.0, skip_rate=0.1, double_rate=0.1), seed=0)
    samples = [typist.type_text(TEXT) for _ in range(20)]
    n_chars = 20 * len(TEXT)
    skipped = sum(edit_distance(s.text, s.aimed) for s in samples) / n_chars
    assert 0.12 < skipped < 0.28  # one edit per skip or double: ~0.2 expected
    assert all(s.registered == s.aimed for s in samples)  # sigma 0: every tap hits its aimed key
    only_double = Typist(TypistConfig(sigma=0.0, double_rate=1.0), seed=0).type_text("abc")
    assert only_double.aimed == "aabbcc"
    only_skip = Typist(TypistConfig(sigma=0.0, skip_rate=1.0), seed=0).type_text("abc")
    assert only_skip.aimed == "" and only_skip.taps.shape == (0, 2)


def test_same_seed_same_taps_different_seed_different_taps() -> None:
    cfg = TypistConfig(sigma=0.3, skip_rate=0.02, double_rate=0.02)
    a = Typist(cfg, seed=11).type_text(TEXT)
    b = Typist(cfg, seed=11).type_text(TEXT)
    c = Typist(cfg, seed=12).type_text(TEXT)
    np.testing.assert_array_equal(a.taps, b.taps)
    assert a.registered == b.registered
    assert a.taps.shape != c.taps.shape or not np.array_equal(a.taps, c.taps)


def test_users_get_different_seeded_noise() -> None:
    pop = PopulationConfig(seed=5)
    configs = [draw_typist_config(f"user{i}", pop) for i in range(200)]
    sigmas = np.array([c.sigma for c in configs])
    assert len(set(sigmas.tolist())) == 200  # every user has their own hand
    assert 0.2 < np.median(sigmas) < 0.3 and sigmas.max() <= pop.sigma_max
    assert draw_typist_config("user3", pop) == configs[3]  # keyed by user id, not by draw order
    assert draw_typist_config("user3", PopulationConfig(seed=6)) != configs[3]
    t1 = Typist.for_user("hamlet/HAMLET", pop).type_text(TEXT)
    t2 = Typist.for_user("hamlet/HAMLET", pop).type_text(TEXT)
    t3 = Typist.for_user("hamlet/OPHELIA", pop).type_text(TEXT)
    np.testing.assert_array_equal(t1.taps, t2.taps)
    assert t1.taps.shape != t3.taps.shape or not np.allclose(t1.taps, t3.taps)


def test_unsupported_characters_raise_or_are_dropped() -> None:
    typist = Typist(TypistConfig(sigma=0.0), seed=0)
    for bad in ("Hello", "1599", "café", "to-night"):
        with pytest.raises(UnsupportedCharacterError, match="no key for"):
            typist.type_text(bad)
    assert typist.type_text("café 1599 to-night", on_unsupported="drop").registered == "caf  tonight"
    with pytest.raises(ValueError, match="on_unsupported"):
        typist.type_text("abc", on_unsupported="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"skip_rate": 1.5}, "skip_rate"),
        ({"double_rate": -0.1}, "double_rate"),
        ({"skip_rate": 0.6, "double_rate": 0.6}, "skip_rate"),
        ({"offset": (0.0,)}, "offset"),
    ],
)
def test_typist_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TypistConfig(**kwargs)


def test_other_configs_validate() -> None:
    with pytest.raises(ValueError, match="key_height"):
        LayoutConfig(key_height=0)
    with pytest.raises(ValueError, match="space_width"):
        LayoutConfig(space_width=12)
    with pytest.raises(ValueError, match="sigma_median"):
        PopulationConfig(sigma_median=0)
    with pytest.raises(ValueError, match="skip_rate"):
        PopulationConfig(skip_rate=0.9)


def test_log_likelihood_is_gaussian_around_key_centres() -> None:
    model = TouchModel(TypistConfig(sigma=0.5))
    centres = model.layout.key_centres("cat")
    best = model.log_likelihood(centres, "cat")
    assert best == pytest.approx(-3 * np.log(2 * np.pi * 0.25))
    assert model.log_likelihood(centres + [0.5, 0.0], "cat") == pytest.approx(best - 3 * 0.5**2 / (2 * 0.25))
    assert model.log_likelihood(centres, "cats") == float("-inf")


def test_edit_distance_known_values() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("to be".split(), "to bee".split()) == 1


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=SUPPORTED_CHARS, max_size=40), st.integers(0, 2**32 - 1))
def test_any_supported_text_types_and_aligns(text: str, seed: int) -> None:
    typed = Typist(TypistConfig(sigma=0.3, skip_rate=0.1, double_rate=0.1), seed=seed).type_text(text)
    assert len(typed.aimed) == len(typed.registered) == len(typed.taps)
    assert set(typed.registered) <= set(SUPPORTED_CHARS)
    # each character was tapped 0, 1 or 2 times, in order
    assert re.fullmatch("".join(re.escape(c) + "{0,2}" for c in text), typed.aimed)
