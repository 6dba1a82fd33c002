"""Noisy-channel autocorrect: exact channel scores, spatial recovery, the LM fixing what space cannot."""

import itertools

import numpy as np
import pytest

from keyboard_sim.autocorrect import VocabIndex, correct, spatial_log_likelihood
from keyboard_sim.touch import TouchModel, Typist, TypistConfig

# ~225 common English words plus some of the corpus' own (apostrophes included); public, hand-listed.
VOCAB = list(
    dict.fromkeys(
        """the of and to a in is it you that he was for on are with as i his they be at one have this from or
had by not word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing
see him two has look more day could go come did number sound no most people my over know water than
call first who may down side been now find any new work part take get place made live where after
back little only round man year came show every good me give our under name very through just form
great think say help low line differ turn cause much mean before move right boy old too same tell
does set three want air well also play small end put home read hand port large spell add even land
here must big high such follow act why ask men change went light kind off need house picture try us
again animal point mother world near build self earth father head stand own page should country thy
thee thou art hath doth love lord king queen sir o'er 'tis that's sweet heart life death night fair""".split()
    )
)


def _accuracy(
    sigma: float, n: int, seed: int, lm=None, rates: float = 0.0, prior=None
) -> tuple[float, float]:
    """(top-1 correction accuracy, naive keyboard accuracy) on ``n`` words drawn from ``prior``."""
    model = TouchModel(TypistConfig(sigma=sigma, skip_rate=rates, double_rate=rates))
    index = VocabIndex(VOCAB, model)
    typist = Typist(model.config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    hits = naive = 0
    for _ in range(n):
        word = VOCAB[rng.choice(len(VOCAB), p=prior)]
        typed = typist.type_text(word)
        best = correct(typed.taps, index, lm, model, top_k=1)
        hits += bool(best) and best[0].word == word
        naive += typed.registered == word
    return hits / n, naive / n


def _brute_force(taps: np.ndarray, word: str, model: TouchModel) -> float:
    """log P(taps | word) by enumerating every way of tapping ``word`` with <= 1 skip or double."""
    cfg = model.config
    terms = []
    for counts in itertools.product((0, 1, 2), repeat=len(word)):
        n_skip, n_double = counts.count(0), counts.count(2)
        if n_skip + n_double > 1 or sum(counts) != len(taps):
            continue
        aimed = "".join(c * k for c, k in zip(word, counts, strict=True))
        log_prior = (len(word) - n_skip - n_double) * np.log(1 - cfg.skip_rate - cfg.double_rate)
        log_prior += n_skip * np.log(cfg.skip_rate) + n_double * np.log(cfg.double_rate)
        terms.append(log_prior + model.log_likelihood(taps, aimed))
    return float(np.logaddexp.reduce(terms)) if terms else float("-inf")


def test_spatial_score_matches_brute_force_alignment() -> None:
    model = TouchModel(TypistConfig(sigma=0.4, offset=(0.05, -0.1), skip_rate=0.03, double_rate=0.02))
    vocab = ["love", "live", "lov", "loves", "loove", "lo", "lovers", "o'er", "thee"]
    index = VocabIndex(vocab, model)
    rng = np.random.default_rng(0)
    for aimed in ("love", "lovve", "lve", "o'er", "thhee"):
        taps = model.layout.key_centres(aimed) + 0.4 * rng.standard_normal((len(aimed), 2))
        got = spatial_log_likelihood(taps, index, model)
        want = [_brute_force(taps, w, model) for w in vocab]
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_uniform_lm_spatial_model_recovers_moderately_noisy_words() -> None:
    accuracy, naive = _accuracy(sigma=0.4, n=400, seed=0)
    # measured: 0.99 corrected vs 0.35 for the naive keyboard; a wrong sign, wrong sigma scaling
    # or misaligned taps drops far below 0.85
    assert accuracy >= 0.85, accuracy
    assert accuracy >= naive + 0.4, (accuracy, naive)


def test_one_skipped_or_doubled_tap_is_corrected() -> None:
    model = TouchModel(TypistConfig(sigma=0.3, skip_rate=0.02, double_rate=0.02))
    index = VocabIndex(VOCAB, model)
    for typed, meant in (("peple", "people"), ("thhee", "thee"), ("hert", "heart"), ("mothher", "mother")):
        best = correct(model.layout.key_centres(typed), index, None, model, top_k=3)
        assert best[0].word == meant, (typed, best)
    # measured on noisy words with 8% skip and 8% double rates: 0.83 (naive keyboard 0.36)
    accuracy, naive = _accuracy(sigma=0.3, n=300, seed=4, rates=0.08)
    assert accuracy >= 0.8 and accuracy > naive + 0.25, (accuracy, naive)


def test_zero_skip_rate_excludes_other_lengths() -> None:
    model = TouchModel(TypistConfig(sigma=0.3))
    best = correct(model.layout.key_centres("peple"), VOCAB, None, model, top_k=5)
    assert all(len(c.word) == 5 for c in best)


def test_context_lm_fixes_what_the_spatial_model_gets_wrong() -> None:
    model = TouchModel(TypistConfig(sigma=0.35))
    index = VocabIndex(VOCAB, model)
    # "i ___ thee": the user meant "love" but the second tap landed on "i" (0.8 of the way from o)
    taps = model.layout.key_centres("love")
    taps[1] = 0.2 * taps[1] + 0.8 * model.layout.key_centres("i")[0]
    spatial_only = correct(taps, index, None, model)
    assert spatial_only[0].word == "live"
    context = np.full(len(VOCAB), np.log(0.5 / len(VOCAB)))
    context[VOCAB.index("love")] = np.log(0.4)
    context[VOCAB.index("live")] = np.log(0.02)
    with_lm = correct(taps, index, context, model)
    assert with_lm[0].word == "love" and "live" in [c.word for c in with_lm]
    # the callable form scores only the reachable candidates and gives the same ranking
    lookup = dict(zip(VOCAB, context, strict=True))
    via_callable = correct(taps, index, lambda words: [lookup[w] for w in words], model)
    assert [c.word for c in via_callable] == [c.word for c in with_lm]
    assert with_lm[0].score == pytest.approx(with_lm[0].spatial + with_lm[0].lm)


def test_word_prior_improves_accuracy_on_synthetic_data() -> None:
    zipf = 1.0 / np.arange(1, len(VOCAB) + 1)
    zipf /= zipf.sum()
    uniform_acc, _ = _accuracy(sigma=0.5, n=400, seed=2, prior=zipf)
    prior_acc, naive = _accuracy(sigma=0.5, n=400, seed=2, prior=zipf, lm=np.log(zipf))
    # measured: uniform LM 0.94, Zipf unigram LM 0.96, naive keyboard 0.27 (same taps for all)
    assert prior_acc > uniform_acc >= 0.85, (prior_acc, uniform_acc)
    assert naive < 0.4


def test_unsupported_vocabulary_words_are_never_candidates() -> None:
    model = TouchModel(TypistConfig(sigma=0.3))
    best = correct(model.layout.key_centres("cafe"), ["café", "cafe", "1599", "care"], None, model, top_k=5)
    assert [c.word for c in best][:1] == ["cafe"] and "café" not in [c.word for c in best]


def test_bad_arguments_raise() -> None:
    model = TouchModel(TypistConfig(sigma=0.3))
    taps = model.layout.key_centres("the")
    with pytest.raises(ValueError, match="shape"):
        correct(taps, VOCAB, np.zeros(3), model)
    with pytest.raises(ValueError, match="top_k"):
        correct(taps, VOCAB, None, model, top_k=0)
    with pytest.raises(ValueError, match="callable returned"):
        correct(taps, VOCAB, lambda words: [0.0], model)
    assert correct(np.zeros((0, 2)), VOCAB, None, model) == []
