"""Kneser-Ney trigram and the shared metrics, on data small enough to check by hand."""

import numpy as np
import pytest

from models.data import Examples, last_context, line_examples, make_examples, sentence_windows
from models.metrics import next_word_metrics
from models.ngram import KneserNeyTrigram


def test_make_examples_pads_with_bos_and_targets_every_word() -> None:
    ex = make_examples([[5, 6, 7], [8]], context=2, bos_id=1)
    assert ex.x.tolist() == [[1, 1], [1, 5], [5, 6], [1, 1]]
    assert ex.y.tolist() == [5, 6, 7, 8]
    assert len(make_examples([], 3, 1)) == 0 and make_examples([], 3, 1).x.shape == (0, 3)


def test_kneser_ney_is_a_distribution_and_prefers_seen_continuations() -> None:
    sentences = [[2, 3, 4], [2, 3, 4], [2, 3, 5], [6, 3, 7]] * 5
    ex = make_examples(sentences, context=2, bos_id=1)
    lm = KneserNeyTrigram(vocab_size=10).fit(ex)
    for history in [(2, 3), (6, 3), (9, 9), (1, 1)]:
        p = lm.distribution(*history)
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    p = lm.distribution(2, 3)
    assert p[4] > p[5] > p[7]  # seen twice as often > seen once > only seen after another word
    query = Examples(np.array([[2, 3]]), np.array([4]))
    logp, topk = lm.log_prob_and_topk(query, k=3, exclude=(4,))
    assert 4 not in topk[0] and topk[0, 0] == 5
    assert logp[0] == pytest.approx(np.log(p[4]))


def test_metrics_by_hand() -> None:
    target = np.array([3, 4, 0, 5])  # the third target is <unk>
    topk = np.array([[3, 9, 8], [9, 4, 8], [2, 3, 4], [9, 8, 7]])
    logp = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    m = next_word_metrics(target, topk, logp, unk_id=0)
    assert m["top1"] == pytest.approx(1 / 3) and m["top3"] == pytest.approx(2 / 3)
    assert m["top1_all"] == pytest.approx(1 / 4) and m["top3_all"] == pytest.approx(2 / 4)
    assert m["perplexity"] == pytest.approx(np.exp(-np.mean(logp)))
    assert m["targets"] == 4 and m["targets_known"] == 3
    with pytest.raises(ValueError, match="no targets"):
        next_word_metrics(np.array([]), np.zeros((0, 3)), np.array([]), 0)


def test_line_scope_contexts_cross_sentences_with_one_bos_between() -> None:
    lines = [[[5, 6], [7]], [[8]]]
    ex = line_examples(lines, context=3, bos_id=1, scope="line")
    assert ex.x.tolist() == [[1, 1, 1], [1, 1, 5], [5, 6, 1], [1, 1, 1]]
    assert ex.y.tolist() == [5, 6, 7, 8]
    same = line_examples(lines, context=3, bos_id=1, scope="sentence")
    assert (
        same.x.tolist()
        == make_examples([[5, 6], [7], [8]], 3, 1).x.tolist()
        == [[1, 1, 1], [1, 1, 5], [1, 1, 1], [1, 1, 1]]
    )
    with pytest.raises(ValueError, match="scope"):
        line_examples(lines, 3, 1, scope="paragraph")


def test_last_context_is_the_window_of_the_next_word() -> None:
    typed = [[5, 6], [7]]
    assert last_context(typed, 3, 1, "line") == [6, 1, 7]
    assert last_context(typed, 3, 1, "line", ended=True) == [1, 7, 1]
    assert last_context(typed, 3, 1, "sentence") == [1, 1, 7]
    assert last_context(typed, 3, 1, "sentence", ended=True) == [1, 1, 1]
    assert last_context([], 2, 1, "line", ended=True) == [1, 1]
    full = line_examples([[[5, 6], [7, 9]]], 3, 1, "line")
    assert full.x[-1].tolist() == last_context(typed, 3, 1, "line")  # 9 follows "5 6 . 7"


def test_sentence_windows_of_line_scope_are_the_sentence_scope_windows() -> None:
    lines = [[[5, 6, 7], [8], [9, 10, 11, 12, 13]], [[14, 15]], [[16], [17, 18]]]
    line = line_examples(lines, context=3, bos_id=1, scope="line")
    sentence = line_examples(lines, context=3, bos_id=1, scope="sentence")
    assert line.x.tolist() != sentence.x.tolist()
    assert sentence_windows(line, 1).x.tolist() == sentence.x.tolist()
    assert sentence_windows(line, 1).y.tolist() == sentence.y.tolist() == line.y.tolist()
