"""Vocabulary: specials, public sources only, OOV rate, serialization."""

from pathlib import Path

import pytest

from models.vocab import BOS, UNK, Vocabulary, build_vocabulary


def test_public_vocabulary_ranks_by_frequency_with_specials_first() -> None:
    vocab = build_vocabulary(5, "public", ["the cat the dog", "the cat sat"])
    assert vocab.words == [UNK, BOS, "the", "cat", "dog"]  # ties broken alphabetically
    assert vocab.id("the") == 2 and vocab.id("zebra") == vocab.unk_id == 0 and vocab.bos_id == 1
    assert vocab.encode_text("The cat. A zebra!") == [[2, 3], [0, 0]]
    assert vocab.decode([2, 3]) == ["the", "cat"]


def test_oov_rate_counts_unknown_tokens() -> None:
    vocab = Vocabulary([UNK, BOS, "a", "b"])
    assert vocab.oov_rate(["a b c d"]) == pytest.approx(0.5)
    assert vocab.oov_rate([]) == 0.0


def test_symspell_source_is_modern_english() -> None:
    vocab = build_vocabulary(100, "symspell")
    assert len(vocab) == 100 and vocab.source == "symspell"
    assert vocab.words[2] == "the" and "and" in vocab


def test_round_trip(tmp_path: Path) -> None:
    vocab = build_vocabulary(6, "public", ["a b c d e f g"])
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.words == vocab.words and again.source == "public"


@pytest.mark.parametrize(
    ("size", "source", "texts", "message"),
    [
        (2, "public", ["a"], "must exceed"),
        (10, "public", [], "needs public_texts"),
        (10, "private", ["a"], "unknown vocabulary source"),
    ],
)
def test_bad_arguments(size: int, source: str, texts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_vocabulary(size, source, texts)


def test_duplicate_words_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([UNK, BOS, "a", "a"])
