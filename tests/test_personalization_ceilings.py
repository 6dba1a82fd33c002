"""The ceilings' building blocks on tiny users whose answers are known by hand."""

from __future__ import annotations

import numpy as np

from hushtype import personalization_ceilings as pc
from keyboard_sim.corpus import UserText
from keyboard_sim.personalize import CacheAdapterConfig
from models.vocab import Vocabulary

V = 8  # ids 0 <unk>, 1 <s>, 2..7 words


def _user(later_y: list[int], later_prev: list[int], train_y: list[int], train_prev: list[int], personal=0):
    n, m = len(later_y), len(train_y)
    logits = np.tile(np.linspace(6.0, 0.0, V), (n, 1))  # the model ranks 2, 3, 4, ... (specials skipped)
    return pc._User(
        V,
        personal,
        np.zeros((m, 2), np.int64),
        np.asarray(train_y),
        np.asarray(train_prev),
        np.tile(np.linspace(6.0, 0.0, V), (m, 1)),
        np.zeros((n, 2), np.int64),
        np.asarray(later_y),
        np.asarray(later_prev),
        logits,
    )


def test_extended_vocab_puts_earlier_own_words_first() -> None:
    vocab = Vocabulary(["<unk>", "<s>", "good", "my"])
    user = UserText("u", ["good eros", "my iras", "good iras", "my lord cleopatra"])  # last line is "later"
    ext, n_personal = pc._extended_vocab(vocab, user, 0.25)
    assert ext.words[4:] == ["eros", "iras", "lord", "cleopatra"]
    assert n_personal == 2  # eros and iras were seen on earlier lines; lord, cleopatra only later


def test_top3_counts_in_vocabulary_and_all_targets_apart() -> None:
    scores = np.array([[0, 0, 5, 4, 3, 0, 0, 0, 9.0], [0, 0, 5, 4, 3, 0, 0, 0, 9.0]])  # column 8: an own word
    top3, top3_all = pc._top3(scores, np.array([2, 8]), V)
    assert (top3, top3_all) == (1.0, 1.0)
    top3, top3_all = pc._top3(scores, np.array([4, 9]), V)  # 4 is pushed out by the own word; 9 unseen
    assert (top3, top3_all) == (0.0, 0.0)


def test_own_words_are_suggested_from_the_unk_logit() -> None:
    user = _user([V, 2], [1, 1], [V, V, 3], [1, 1, 1], personal=1)
    assert pc._score(user, user.later_logits)[1] == 0.5  # without: the own word V is never suggested
    assert pc._score(user, user.later_logits, offset=0.0)[1] == 1.0  # z_unk (top) + log 1: suggested


def test_bigram_cache_predicts_a_repeated_pair() -> None:
    # the user always types 7 after 5: the model ranks 7 last; the bigram cache brings it up
    user = _user([7], [5], [7, 7, 2], [5, 5, 1])
    parts = pc._cache_parts(user)
    assert pc._score(user, pc._cache_scores(parts, 0.0, 0.0))[0] == 0.0
    assert pc._score(user, pc._cache_scores(parts, 0.0, 0.3))[0] == 1.0


def test_up_to_date_adapter_sees_words_typed_before_but_not_the_current_one() -> None:
    # 7 (ranked last, never typed before) typed three times on later lines: the first is missed, the rest hit
    user = _user([7, 7, 7], [1, 7, 7], [2, 3, 4] * 3, [1] * 9)
    config = CacheAdapterConfig(scale=4.0, prior=0.01, max_abs=10.0)
    assert pc._dynamic_scores(user, config, per_word=True)[0] == 2 / 3
    assert pc._dynamic_scores(user, config)[0] == 0.0  # one sentence: nothing sent before it started
    two_sentences = _user([7, 7, 7], [1, 7, 1], [2, 3, 4] * 3, [1] * 9)
    assert pc._dynamic_scores(two_sentences, config)[0] == 1 / 3  # the second sentence sees the first


def test_the_bench_flag_reaches_the_ceilings() -> None:
    from hushtype.cli import build_parser

    args = build_parser().parse_args(["bench", "personalization", "--ceilings", "--no-server"])
    assert args.ceilings and args.no_server
    assert not build_parser().parse_args(["bench", "personalization"]).ceilings
