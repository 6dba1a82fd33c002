"""Tokenizer policy: case, apostrophes, punctuation, hyphens, digits, sentence boundaries."""

import pytest

from models.tokenizer import normalize, tokenize, tokenize_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("To be, or NOT to be", ["to", "be", "or", "not", "to", "be"]),
        ("O'er the hills; that's fix'd", ["o'er", "the", "hills", "that's", "fix'd"]),
        ("'Tis now struck twelve", ["'tis", "now", "struck", "twelve"]),
        ("\u2019Twas brillig", ["'twas", "brillig"]),  # curly apostrophe normalised
        ("'hello' she said", ["hello", "she", "said"]),  # quoting apostrophes dropped
        ("to-night--and good-morrow", ["to", "night", "and", "good", "morrow"]),
        ("in 1599 and 42nd", ["in", "1599", "and", "42nd"]),
        ("...!!  ,,", []),
        ("", []),
        ("caf\u00e9 na\u00efve_x", ["caf\u00e9", "na\u00efve", "x"]),  # unicode letters; _ splits
    ],
)
def test_tokenize_edge_cases(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_sentence_boundaries_split_on_terminal_punctuation() -> None:
    text = "Who's there? Nay, answer me: stand. Long live the king!"
    assert tokenize_sentences(text) == [
        ["who's", "there"],
        ["nay", "answer", "me"],
        ["stand"],
        ["long", "live", "the", "king"],
    ]


def test_sentences_without_words_are_dropped() -> None:
    assert tokenize_sentences("... ? ! Hi.") == [["hi"]]


def test_normalize_lowercases_and_maps_quotes() -> None:
    assert normalize("It\u2019S `Tis") == "it's 'tis"
