"""The word vocabulary: built only from text that is public in the threat model.

Two sources, selected by name (``build_vocabulary``):

- ``"public"`` (default): the most frequent words of the corpus' *public* split (whole plays no
  train or held-out user belongs to). In-domain, so the OOV rate on Shakespeare is far lower.
- ``"symspell"``: the top of symspellpy's bundled English frequency list (MIT), for deployments
  on modern text.

Never built from train or held-out users' text: which words a device typed is private.
Ids 0 and 1 are the specials ``<unk>`` and ``<s>`` (sentence start, also the left padding of the
context); words fill ids 2..size-1 by descending frequency, ties broken alphabetically.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from models.tokenizer import tokenize, tokenize_sentences

__all__ = ["UNK", "BOS", "SPECIALS", "Vocabulary", "build_vocabulary", "symspell_words"]

UNK, BOS = "<unk>", "<s>"
SPECIALS = (UNK, BOS)
_SYMSPELL_FILE = "frequency_dictionary_en_82_765.txt"


class Vocabulary:
    """Bidirectional word <-> id map with ``<unk>`` = 0 and ``<s>`` = 1."""

    def __init__(self, words: Iterable[str], source: str = "custom") -> None:
        words = list(words)
        if words[: len(SPECIALS)] != list(SPECIALS):
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words: list[str] = words
        self.source = source
        self.index: dict[str, int] = {w: i for i, w in enumerate(words)}

    unk_id = 0
    bos_id = 1

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def id(self, word: str) -> int:
        """Id of ``word``, ``<unk>``'s id if it is out of vocabulary."""
        return self.index.get(word, self.unk_id)

    def encode_words(self, words: Iterable[str]) -> list[int]:
        """Ids of already-tokenized words."""
        return [self.index.get(w, self.unk_id) for w in words]

    def encode_text(self, text: str) -> list[list[int]]:
        """Tokenize ``text`` into sentences and map each to ids."""
        return [self.encode_words(s) for s in tokenize_sentences(text)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words for ids."""
        return [self.words[i] for i in ids]

    def oov_rate(self, texts: Iterable[str]) -> float:
        """Fraction of word tokens in ``texts`` that map to ``<unk>``."""
        total = oov = 0
        for text in texts:
            for word in tokenize(text):
                total += 1
                oov += word not in self.index
        return oov / total if total else 0.0

    def to_json(self) -> str:
        """JSON form, as shipped to devices in the model card."""
        return json.dumps({"source": self.source, "words": self.words})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """Inverse of ``to_json``."""
        data = json.loads(text)
        return cls(data["words"], source=data.get("source", "custom"))

    def save(self, path: str | Path) -> None:
        """Write the JSON form to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by ``save``."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def symspell_words() -> list[tuple[str, int]]:
    """(word, count) pairs of symspellpy's bundled English frequency list, most frequent first."""
    text = resources.files("symspellpy").joinpath(_SYMSPELL_FILE).read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        word, _, count = line.partition(" ")
        if word and count.strip().isdigit():
            pairs.append((word, int(count)))
    pairs.sort(key=lambda p: (-p[1], p[0]))
    return pairs


def build_vocabulary(size: int, source: str = "public", public_texts: Iterable[str] = ()) -> Vocabulary:
    """A vocabulary of ``size`` entries (specials included) from a public source.

    ``source="public"`` counts words in ``public_texts`` (the corpus' public split);
    ``source="symspell"`` takes the top of symspellpy's English frequency list.
    """
    if size <= len(SPECIALS):
        raise ValueError(f"vocabulary size must exceed {len(SPECIALS)} (the specials), got {size}")
    n_words = size - len(SPECIALS)
    if source == "public":
        counts: Counter[str] = Counter()
        for text in public_texts:
            counts.update(tokenize(text))
        if not counts:
            raise ValueError("source='public' needs public_texts: the public split is empty")
        ranked = sorted(counts.items(), key=lambda p: (-p[1], p[0]))
    elif source == "symspell":
        ranked = symspell_words()
    else:
        raise ValueError(f"unknown vocabulary source {source!r}; expected 'public' or 'symspell'")
    words = [w for w, _ in ranked if w not in SPECIALS][:n_words]
    return Vocabulary(list(SPECIALS) + words, source=source)
