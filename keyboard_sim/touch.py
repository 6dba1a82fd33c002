"""A QWERTY touchscreen and the users who type on it: noisy taps from real sentences.

Geometry (all lengths in **key widths**; x grows to the right, y grows downwards):

- three letter rows with the usual phone stagger: ``qwertyuiop`` from x=0, ``asdfghjkl``
  shifted by half a key, ``zxcvbnm`` shifted by 1.5 keys (the shift key sits to its left);
- the apostrophe key right of ``m`` (our tokenizer keeps "o'er", "'tis"; a real keyboard hides
  it on a second layer, we keep one layer so every word is typed with single taps);
- a 5-key-wide space bar centred under the letters;
- rows are ``LayoutConfig.key_height`` (default 1.5) key widths apart: phone keys are about
  1.5x taller than wide (Gboard: ~36 x 56 dp per key including gaps).

Only character keys are modelled: a tap on shift/backspace/the empty margin registers as the
nearest character key. A naive keyboard registers the key whose rectangle contains the tap
(for the letter grid this is the nearest key centre in the row; for the wide space bar it is
not, which is why we hit-test rectangles rather than centres).

Touch noise (Goodman et al. 2002, "Language modeling for soft keyboards"; Gunawardana et al.
2010, "Usability guided key-target resizing"): a tap aimed at key c lands at
``centre(c) + offset + N(0, sigma^2 I)``, with a per-user ``sigma`` and systematic ``offset``.
A tap is skipped with probability ``skip_rate`` and doubled (two independent taps) with
probability ``double_rate``. ``draw_typist_config`` draws a user's parameters from a seeded
population (log-normal sigma), keyed by user id so a user's hand never depends on who else
is simulated.

Supported alphabet: ``a``-``z``, ``'`` and space (``SUPPORTED_CHARS``). Text must be lowercase
(``models.tokenizer.normalize``); other characters (digits, accented letters) raise
``UnsupportedCharacterError`` unless ``on_unsupported="drop"``, which removes them first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "QWERTY_ROWS",
    "SUPPORTED_CHARS",
    "UnsupportedCharacterError",
    "LayoutConfig",
    "KeyboardLayout",
    "TypistConfig",
    "PopulationConfig",
    "draw_typist_config",
    "TypedText",
    "TouchModel",
    "Typist",
    "edit_distance",
    "ErrorRates",
    "error_rates",
]

QWERTY_ROWS: tuple[str, str, str] = ("qwertyuiop", "asdfghjkl", "zxcvbnm'")
_ROW_OFFSETS: tuple[float, float, float] = (0.0, 0.5, 1.5)  # left edge of each row's first key
SUPPORTED_CHARS: str = "".join(QWERTY_ROWS) + " "

OnUnsupported = Literal["raise", "drop"]


class UnsupportedCharacterError(ValueError):
    """The text holds a character with no key; the message names it and how to proceed."""


# --------------------------------------------------------------------------- geometry


@dataclass
class LayoutConfig:
    """Key geometry in key widths.

    Parameters
    ----------
    key_height : float
        Row pitch in key widths (default: 1.5, a phone key is ~1.5x taller than wide).
    space_width : float
        Width of the space bar in key widths (default: 5.0).
    """

    key_height: float = 1.5
    space_width: float = 5.0

    def __post_init__(self) -> None:
        if not self.key_height > 0:
            raise ValueError(f"LayoutConfig.key_height must be > 0, got {self.key_height}")
        if not 0 < self.space_width <= 10:
            raise ValueError(f"LayoutConfig.space_width must be in (0, 10], got {self.space_width}")


class KeyboardLayout:
    """Key rectangles of a one-layer QWERTY keyboard (letters, apostrophe, space).

    Attributes
    ----------
    chars : str
        The characters with a key, in key-index order.
    centres : np.ndarray
        ``(K, 2)`` key centres ``(x, y)`` in key widths.
    half_sizes : np.ndarray
        ``(K, 2)`` half width and half height of each key rectangle.
    """

    def __init__(self, config: LayoutConfig | None = None) -> None:
        self.config = config or LayoutConfig()
        h = self.config.key_height
        chars, centres, half = [], [], []
        for row, (keys, left) in enumerate(zip(QWERTY_ROWS, _ROW_OFFSETS, strict=True)):
            for i, char in enumerate(keys):
                chars.append(char)
                centres.append((left + i + 0.5, (row + 0.5) * h))
                half.append((0.5, 0.5 * h))
        chars.append(" ")
        centres.append((5.0, 3.5 * h))  # centred under the 10-key top row
        half.append((0.5 * self.config.space_width, 0.5 * h))
        self.chars = "".join(chars)
        self.centres = np.asarray(centres, dtype=np.float64)
        self.half_sizes = np.asarray(half, dtype=np.float64)
        self._index = {c: k for k, c in enumerate(self.chars)}

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def key_index(self, text: str) -> np.ndarray:
        """Key indices ``(len(text),)`` of the characters of ``text``; raises on a character without a key."""
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise UnsupportedCharacterError(
                f"no key for {exc.args[0]!r} in {text!r}: supported characters are {SUPPORTED_CHARS!r}; "
                "lowercase the text (models.tokenizer.normalize) or pass on_unsupported='drop'"
            ) from None

    def key_centres(self, text: str) -> np.ndarray:
        """Centres ``(len(text), 2)`` of the keys that type ``text``."""
        return self.centres[self.key_index(text)]

    def supports(self, text: str) -> bool:
        """Whether every character of ``text`` has a key."""
        return all(c in self._index for c in text)

    def clean(self, text: str) -> str:
        """``text`` with every character that has no key removed."""
        return "".join(c for c in text if c in self._index)

    def hit_test(self, taps: np.ndarray) -> str:
        """Characters a naive keyboard registers for ``taps`` ``(n, 2)``: the nearest key rectangle.

        A tap inside a key is at distance 0 from it; rectangles do not overlap, so a tap inside
        one key registers that key. Outside every key (margins, shift, off-screen) the
        rectangle at the smallest Euclidean distance wins.
        """
        taps = np.asarray(taps, dtype=np.float64).reshape(-1, 2)
        gap = np.abs(taps[:, None, :] - self.centres[None, :, :]) - self.half_sizes[None, :, :]  # (n, K, 2)
        dist2 = (np.clip(gap, 0.0, None) ** 2).sum(axis=-1)  # (n, K)
        return "".join(self.chars[k] for k in dist2.argmin(axis=1))


# --------------------------------------------------------------------------- users


@dataclass
class TypistConfig:
    """One user's touch behaviour.

    Parameters
    ----------
    sigma : float
        Std of the isotropic Gaussian touch noise in key widths (default: 0.25).
    offset : tuple[float, float]
        Systematic ``(dx, dy)`` bias of every tap in key widths (default: (0, 0)).
    skip_rate : float
        Probability that a character gets no tap (default: 0.0).
    double_rate : float
        Probability that a character gets two taps (default: 0.0). ``skip_rate + double_rate <= 1``.
    """

    sigma: float = 0.25
    offset: tuple[float, float] = (0.0, 0.0)
    skip_rate: float = 0.0
    double_rate: float = 0.0

    def __post_init__(self) -> None:
        if not (self.sigma >= 0 and np.isfinite(self.sigma)):
            raise ValueError(f"TypistConfig.sigma must be a finite value >= 0, got {self.sigma}")
        if len(self.offset) != 2 or not np.all(np.isfinite(self.offset)):
            raise ValueError(f"TypistConfig.offset must be two finite numbers (dx, dy), got {self.offset}")
        self.offset = (float(self.offset[0]), float(self.offset[1]))
        for name in ("skip_rate", "double_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TypistConfig.{name} must be in [0, 1], got {value}")
        if self.skip_rate + self.double_rate > 1.0:
            raise ValueError(
                "TypistConfig.skip_rate + double_rate must be <= 1, "
                f"got {self.skip_rate} + {self.double_rate}"
            )


@dataclass
class PopulationConfig:
    """Distribution of users' touch behaviour; ``draw_typist_config`` samples from it.

    Parameters
    ----------
    sigma_median : float
        Median touch-noise std in key widths (default: 0.25, most taps land on the aimed key).
    sigma_spread : float
        Log-normal shape of sigma across users (default: 0.35: the 5-95% range is ~0.56x-1.8x).
    sigma_max : float
        Upper clip of sigma (default: 1.0).
    offset_std : float
        Std of each user's systematic offset per axis in key widths (default: 0.05).
    skip_rate, double_rate : float
        Rates shared by all users (default: 0.005 each, about one in 200 characters).
    seed : int
        Population seed; a user's draw depends only on (seed, user id) (default: 0).
    """

    sigma_median: float = 0.25
    sigma_spread: float = 0.35
    sigma_max: float = 1.0
    offset_std: float = 0.05
    skip_rate: float = 0.005
    double_rate: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("sigma_median", "sigma_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PopulationConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("sigma_spread", "offset_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PopulationConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("skip_rate", "double_rate"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise ValueError(f"PopulationConfig.{name} must be in [0, 0.5], got {getattr(self, name)}")


def _user_rng(seed: int, user_id: str, purpose: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{purpose}\x00{user_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw_typist_config(user_id: str, population: PopulationConfig | None = None) -> TypistConfig:
    """A user's touch parameters, drawn from ``population`` keyed by (seed, ``user_id``)."""
    pop = population or PopulationConfig()
    rng = _user_rng(pop.seed, user_id, "typist")
    sigma = min(pop.sigma_median * float(np.exp(pop.sigma_spread * rng.standard_normal())), pop.sigma_max)
    dx, dy = pop.offset_std * rng.standard_normal(2)
    return TypistConfig(sigma=sigma, offset=(dx, dy), skip_rate=pop.skip_rate, double_rate=pop.double_rate)


# --------------------------------------------------------------------------- typing


@dataclass
class TypedText:
    """What a user meant, where they tapped, and what a naive keyboard registered.

    ``taps[i]`` was aimed at ``aimed[i]`` and registered as ``registered[i]``; skipped characters
    have no tap and doubled ones have two, so ``len(aimed) == len(taps)`` may differ from
    ``len(text)``.
    """

    text: str
    taps: np.ndarray  # (n, 2) in key widths
    aimed: str
    registered: str

    def word_taps(self) -> list[np.ndarray]:
        """Taps split into words at the taps **registered** as space (what a keyboard sees)."""
        words, start = [], 0
        for i, char in enumerate(self.registered + " "):
            if char == " ":
                if i > start:
                    words.append(self.taps[start:i])
                start = i + 1
        return words


@dataclass
class TouchModel:
    """A keyboard's touch model: layout + touch parameters; samples taps and scores them.

    The same class is the *generator* (a user's true parameters) and the keyboard's *belief*
    used by autocorrect (which need not match the user).
    """

    config: TypistConfig = field(default_factory=TypistConfig)
    layout: KeyboardLayout = field(default_factory=KeyboardLayout)

    def sample(
        self, text: str, rng: np.random.Generator, on_unsupported: OnUnsupported = "raise"
    ) -> TypedText:
        """Tap ``text`` once: noisy taps plus skip/double errors, and the naive registration."""
        if on_unsupported == "drop":
            text = self.layout.clean(text)
        elif on_unsupported != "raise":
            raise ValueError(f"on_unsupported must be 'raise' or 'drop', got {on_unsupported!r}")
        keys = self.layout.key_index(text)
        cfg = self.config
        # taps per character: 0 (skip), 1, or 2 (double)
        u = rng.random(len(keys))
        counts = np.where(u < cfg.skip_rate, 0, np.where(u < cfg.skip_rate + cfg.double_rate, 2, 1))
        aimed_keys = np.repeat(keys, counts)
        noise = cfg.sigma * rng.standard_normal((len(aimed_keys), 2))
        taps = self.layout.centres[aimed_keys] + np.asarray(cfg.offset) + noise
        aimed = "".join(self.layout.chars[k] for k in aimed_keys)
        return TypedText(text=text, taps=taps, aimed=aimed, registered=self.layout.hit_test(taps))

    def log_likelihood(self, taps: np.ndarray, word: str) -> float:
        """``log P(taps | word)`` with one tap per character (Gaussian around each key centre + offset).

        Returns ``-inf`` when the lengths differ; ``keyboard_sim.autocorrect`` also handles one
        skipped or doubled tap.
        """
        taps = np.asarray(taps, dtype=np.float64).reshape(-1, 2)
        if len(taps) != len(word):
            return float("-inf")
        sigma = max(self.config.sigma, 1e-6)
        diff = taps - self.layout.key_centres(word) - np.asarray(self.config.offset)
        return float(-(diff**2).sum() / (2 * sigma**2) - len(word) * np.log(2 * np.pi * sigma**2))


class Typist:
    """One simulated user: a ``TouchModel`` with the user's parameters and the user's own RNG.

    ``seed`` may be an int or a ``numpy.random.Generator``; the same seed gives the same taps.
    """

    def __init__(
        self,
        config: TypistConfig | None = None,
        seed: int | np.random.Generator = 0,
        layout: KeyboardLayout | None = None,
    ) -> None:
        self.model = TouchModel(config or TypistConfig(), layout or KeyboardLayout())
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    @classmethod
    def for_user(cls, user_id: str, population: PopulationConfig | None = None) -> Typist:
        """The typist of ``user_id``: parameters and tap RNG both keyed by (population seed, user id)."""
        pop = population or PopulationConfig()
        return cls(draw_typist_config(user_id, pop), seed=_user_rng(pop.seed, user_id, "taps"))

    @property
    def config(self) -> TypistConfig:
        """The user's touch parameters."""
        return self.model.config

    def type_text(self, text: str, on_unsupported: OnUnsupported = "raise") -> TypedText:
        """Tap a sentence (lowercase words separated by spaces); advances the typist's RNG."""
        return self.model.sample(text, self.rng, on_unsupported=on_unsupported)


# --------------------------------------------------------------------------- measuring


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance (unit insert/delete/substitute) between two strings or word lists."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


@dataclass
class ErrorRates:
    """Pooled error rates of registered vs intended text (edits / reference length)."""

    cer: float  # character error rate
    wer: float  # word error rate
    n_chars: int
    n_words: int


def error_rates(samples: Sequence[TypedText]) -> ErrorRates:
    """Character and word error rates of the naive registration, pooled over ``samples``."""
    char_edits = word_edits = n_chars = n_words = 0
    for s in samples:
        char_edits += edit_distance(s.text, s.registered)
        word_edits += edit_distance(s.text.split(), s.registered.split())
        n_chars += len(s.text)
        n_words += len(s.text.split())
    if n_chars == 0:
        raise ValueError("error_rates needs at least one non-empty sample")
    return ErrorRates(char_edits / n_chars, word_edits / max(n_words, 1), n_chars, n_words)
