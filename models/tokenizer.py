"""Tokenizer policy shared by the device, the trainer and the server.

Policy (tested in tests/models/test_tokenizer.py):

- **Case**: everything is lowercased; a keyboard suggests words, capitalisation is the UI's job.
- **Apostrophes**: kept inside words ("o'er", "usurp'st", "that's") and at the start of the
  Elizabethan contractions that begin with one ("'tis", "'twas", "'gainst"). Curly quotes are
  normalised to ``'`` first. Quoting apostrophes around words ("'hello'") are dropped.
- **Punctuation** is not a token. Hyphens and dashes split words ("to-night" -> "to", "night").
- **Letters** are any Unicode letters ("café" is one word); **digits**: runs of digits are one token
  ("1599").
- **Sentence boundaries**: ``.``, ``!``, ``?``, ``;``, ``:`` end a sentence; so does the end of a
  speech (a corpus line). How contexts use them is ``DataConfig.context_scope``
  (``models.data.line_examples``): across sentence ends within the line, each end one ``<s>``
  ("line", the default), or each sentence on its own from ``<s>`` padding ("sentence").
"""

from __future__ import annotations

import re

__all__ = ["normalize", "split_sentences", "tokenize", "tokenize_sentences"]

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SENTENCE_END = re.compile(r"[.!?;:]+")
# A word: letters/digits, optionally joined by single inner apostrophes; or a leading-apostrophe
# contraction ('tis, 'twas, 'gainst, 'em, ...), where the apostrophe stands for elided letters.
_WORD = re.compile(
    r"'(?:t(?:is|was|were|would|will|wixt)|gainst|em|tween|twas|scape|mongst|bout)\b"
    r"|[^\W_]+(?:'[^\W_]+)*"
)


def normalize(text: str) -> str:
    """Lowercase and normalise apostrophe variants to ASCII ``'``."""
    return text.translate(_QUOTES).lower()


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ``. ! ? ; :`` (empty pieces dropped)."""
    return [piece for piece in _SENTENCE_END.split(normalize(text)) if piece.strip()]


def tokenize(text: str) -> list[str]:
    """Word tokens of ``text`` under the policy above, ignoring sentence boundaries."""
    return _WORD.findall(normalize(text))


def tokenize_sentences(text: str) -> list[list[str]]:
    """Word tokens of ``text`` per sentence; sentences without words are dropped."""
    sentences = (tokenize(piece) for piece in split_sentences(text))
    return [words for words in sentences if words]
