"""Noisy-channel autocorrect: exact alignment, pruning that loses nothing, learned rates, the keep rule."""

import itertools
import math
import random

import numpy as np
import pytest

from keyboard_sim.autocorrect import AutocorrectConfig, Autocorrector
from keyboard_sim.candidates import DeletionIndex, PrefixIndex, deletes
from keyboard_sim.channel import (
    ALPHABET,
    ChannelTables,
    Typed,
    channel_cost,
    estimate_channel,
    kept_costs,
    strip_bound,
)
from keyboard_sim.misspellings import Misspelling, parse_codespell, split_pairs
from keyboard_sim.touch import Typist, TypistConfig

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
ZIPF = [1000.0 / (r + 1) for r in range(len(VOCAB))]

# hand-made misspellings in the style of real lists: doubled/dropped letters, swaps, vowels, neighbours
PAIRS = [
    ("teh", "the"), ("recieve", "receive"), ("occured", "occurred"), ("untill", "until"), ("wich", "which"),
    ("beleive", "believe"), ("seperate", "separate"), ("definately", "definitely"), ("adress", "address"),
    ("tommorow", "tomorrow"), ("begining", "beginning"), ("accross", "across"), ("wierd", "weird"),
    ("freind", "friend"), ("thier", "their"), ("becuase", "because"), ("realy", "really"), ("alot", "allot"),
    ("goverment", "government"), ("enviroment", "environment"), ("neccessary", "necessary"),
    ("acheive", "achieve"), ("existance", "existence"), ("occassion", "occasion"), ("grammer", "grammar"),
    ("calender", "calendar"), ("independant", "independent"), ("succesful", "successful"),
]  # fmt: skip


@pytest.fixture(scope="module")
def tables() -> ChannelTables:
    return estimate_channel(PAIRS * 3, source="test pairs")


@pytest.fixture(scope="module")
def ac(tables: ChannelTables) -> Autocorrector:
    return Autocorrector(VOCAB, ZIPF, tables, AutocorrectConfig())


def _full_viterbi(t: ChannelTables, typed: str, word: str, alpha: float) -> float:
    """Reference: the same channel by a plain full-table dynamic program (no stripping, no band)."""
    idx = {c: i for i, c in enumerate(ALPHABET)}
    x, w = [idx[c] for c in typed], [idx[c] for c in word]
    A = len(ALPHABET)
    bos, eos = A, A + 1
    N, M = len(x), len(w)
    D = np.full((N + 1, M + 1), math.inf)
    D[0, 0] = 0.0
    for i, j in itertools.product(range(N + 1), range(M + 1)):
        if i and j:
            step = -t.keep[w[j - 1]] if x[i - 1] == w[j - 1] else alpha - t.sub[w[j - 1], x[i - 1]]
            D[i, j] = min(D[i, j], D[i - 1, j - 1] + step)
        if i:
            prev, nxt = (w[j - 1] if j else bos), (w[j] if j < M else eos)
            D[i, j] = min(D[i, j], D[i - 1, j] + alpha - t.ins[prev, x[i - 1], nxt])
        if j:
            D[i, j] = min(D[i, j], D[i, j - 1] + alpha - t.dele[w[j - 2] if j >= 2 else bos, w[j - 1]])
        if i >= 2 and j >= 2 and x[i - 2] == w[j - 1] and x[i - 1] == w[j - 2]:
            D[i, j] = min(D[i, j], D[i - 2, j - 2] + alpha - t.trans[w[j - 2], w[j - 1]])
    return float(D[N, M])


def test_channel_cost_is_the_full_viterbi_alignment(tables: ChannelTables) -> None:
    for typed, word in [
        *PAIRS,
        ("the", "the"),
        ("thhe", "the"),
        ("hte", "the"),
        ("xyz", "the"),
        ("lvoe", "love"),
    ]:
        want = _full_viterbi(tables, typed, word, 4.0)
        got = channel_cost(tables, Typed.from_text(typed), word, 4.0)
        assert got == pytest.approx(want, abs=1e-9), (typed, word)


def test_lower_bounds_never_exceed_the_cost(tables: ChannelTables) -> None:
    rng = random.Random(0)
    for _ in range(300):
        word = rng.choice(VOCAB)
        typed = "".join(rng.choice((c, c, c, rng.choice("aeiourst"))) for c in word) or "a"
        t = Typed.from_text(typed)
        shape = strip_bound(tables, t, word, 4.0, band=2, kept=kept_costs(tables, t, 4.0))
        if shape is not None:
            assert shape[2] + shape[3] <= channel_cost(tables, t, word, 4.0) + 1e-9


def test_pruned_search_returns_the_exhaustive_top_k(ac: Autocorrector) -> None:
    typist = Typist(TypistConfig(sigma=0.45, skip_rate=0.05, double_rate=0.05), seed=3)
    rng = np.random.default_rng(3)
    for word in rng.choice(VOCAB, size=60):
        for typed in (typist.type_text(word).taps, typist.type_text(word).registered.replace(" ", "")):
            if len(typed) == 0:
                continue
            t = ac.typed(typed)
            ids = ac.index.lookup(t.chars) | ({ac.ids[t.chars]} if t.chars in ac.ids else set())
            scores = sorted(
                (ac.unigram[i] - channel_cost(ac.channel, t, ac.words[i], ac.config.edit_cost), ac.words[i])
                for i in ids
            )[::-1]
            want = [w for s, w in scores if s > -math.inf and s > scores[0][0] - ac.window][:3]
            assert [c.word for c in ac.candidates(t, top_k=3)] == want


def test_deletion_index_finds_every_word_within_two_edits() -> None:
    index = DeletionIndex(VOCAB)
    assert deletes("abc", 1) == {"abc", "bc", "ac", "ab"}
    for typed in ("teh", "hte", "lvoe", "mothr", "peeple", "wrld", "anmal", "xx"):
        found = {VOCAB[i] for i in index.lookup(typed)}
        near = {w for w in VOCAB if _osa(typed, w) <= 2}
        assert near <= found, (typed, near - found)


def _osa(a: str, b: str) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
        if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
            d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def test_estimated_rates_follow_the_data(tables: ChannelTables) -> None:
    idx = {c: i for i, c in enumerate(ALPHABET)}
    # the pairs drop doubled letters (occured, begining, ...): dropping one is likelier than a plain drop
    assert tables.dele[idx["c"], idx["c"]] > tables.dele[idx["c"], idx["r"]] + 1.0
    # "ie"/"ei" swaps are in the pairs; "ei" written "ie" beats an unseen swap
    assert tables.trans[idx["e"], idx["i"]] > tables.trans[idx["k"], idx["o"]] + 1.0
    # a neighbouring key is a likelier substitution than a far one, with no data on either
    assert tables.sub[idx["q"], idx["w"]] > tables.sub[idx["q"], idx["m"]]
    assert "test pairs" in tables.source


def test_real_word_kept_misspelling_corrected(ac: Autocorrector) -> None:
    for typed, want in (("teh", "the"), ("mothr", "mother"), ("lvoe", "love"), ("peopel", "people")):
        result = ac.correct(typed)
        assert result.word == want and result.corrected, (typed, result)
    # "form" is a word: kept although "from" is far more frequent and one swap away
    result = ac.correct("form")
    assert result.word == "form" and not result.corrected
    assert "from" in [c.word for c in result.candidates]
    # nothing near: the input is kept as typed
    assert ac.correct("zzzzzzzz").word == "zzzzzzzz"


def test_touch_taps_are_decoded_far_better_than_a_plain_keyboard(ac: Autocorrector) -> None:
    typist = Typist(TypistConfig(sigma=0.4), seed=1)
    rng = np.random.default_rng(1)
    hits = naive = 0
    words = rng.choice(VOCAB, size=300, p=np.asarray(ZIPF) / sum(ZIPF))
    for word in words:
        typed = typist.type_text(word)
        hits += ac.correct(typed.taps).word == word
        naive += typed.registered == word
    # measured: 0.96 corrected vs 0.45 registered right; a wrong sign or sigma scaling drops far below
    assert hits / len(words) >= 0.88 and hits > naive + 0.3 * len(words), (hits, naive)


def test_context_prior_decides_what_the_channel_cannot(ac: Autocorrector) -> None:
    # "i ___ thee": the taps of "love" with the o pushed 60% of the way to i: spatially "live"
    centres = ac.layout.key_centres("love")
    centres[1] = 0.4 * centres[1] + 0.6 * ac.layout.key_centres("i")[0]
    assert ac.correct(centres).word == "live"
    lm_words = ["<unk>", *VOCAB]
    logp = np.full(len(lm_words), math.log(0.5 / len(lm_words)))
    logp[lm_words.index("love")], logp[lm_words.index("live")] = math.log(0.45), math.log(0.005)
    with_lm = Autocorrector(VOCAB, ZIPF, ac.channel, AutocorrectConfig(), lm_words=lm_words)
    best = with_lm.correct(centres, logp)
    assert best.word == "love" and "live" in [c.word for c in best.candidates]
    assert best.candidates[0].score == pytest.approx(best.candidates[0].channel + best.candidates[0].prior)


def test_words_outside_the_model_share_its_unknown_mass(tables: ChannelTables) -> None:
    lm_words = ["<unk>", "<s>", "the", "love"]
    ac = Autocorrector(["the", "love", "live", "life"], [100, 10, 30, 10], tables, lm_words=lm_words)
    logp = np.log([0.5, 1e-9, 0.3, 0.2])
    prior = ac.prior(logp)
    assert prior[ac.ids["the"]] == pytest.approx(math.log(0.3))
    # "live" and "life" split P(<unk>) = 0.5 by their counts 30 : 10
    assert prior[ac.ids["live"]] == pytest.approx(math.log(0.5 * 0.75))
    assert np.exp(prior).sum() == pytest.approx(1.0, abs=1e-6)


def test_completion_and_strip(ac: Autocorrector) -> None:
    prior = ac.prior()
    assert ac.complete("mo", prior, 3) == ["more", "most", "move"]
    assert ac.complete("zq", prior) == []
    assert PrefixIndex(["b", "ab", "abc", "a"]).range("ab") == (1, 3)
    assert ac.strip("th")[:1] == ["the"] and len(ac.strip("th")) == 3
    assert ac.strip("thx")[:1] == ["the"]  # no completion: corrections fill the slots


def test_bad_input_is_refused(tables: ChannelTables, ac: Autocorrector) -> None:
    with pytest.raises(ValueError, match="top_k"):
        ac.candidates("the", top_k=0)
    with pytest.raises(ValueError, match="no key"):
        ac.correct("café")
    with pytest.raises(ValueError, match="differ in length"):
        Autocorrector(["a"], [1, 2], tables)
    with pytest.raises(ValueError, match="prior_weight"):
        AutocorrectConfig(prior_weight=0)
    with pytest.raises(ValueError, match="at least one"):
        estimate_channel([("same", "same")])
    assert ac.candidates("") == []


def test_codespell_lines_are_parsed_and_split_by_the_right_word() -> None:
    text = "teh->the\nabbout->about, abbot,\n# comment\nrecieve->receive\nthw->the\nfoo->Foo\ncafe->café\n"
    pairs = parse_codespell(text)
    assert pairs == [Misspelling("teh", "the"), Misspelling("recieve", "receive"), Misspelling("thw", "the")]
    tune, held = split_pairs(pairs, "tune", tune_fraction=0.5), split_pairs(pairs, "eval", tune_fraction=0.5)
    assert sorted(tune + held, key=pairs.index) == pairs
    assert not {p.right for p in tune} & {p.right for p in held}  # one right word, one side
    with pytest.raises(ValueError, match="part"):
        split_pairs(pairs, "test")  # type: ignore[arg-type]
