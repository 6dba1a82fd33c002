"""The autocorrect benchmark on a tiny trained release: real decoding, real context windows.

The fixture release (``tests/conftest.py``'s ``small_release``) has words ``w0..w61``, which have
no keys (digits), so this module trains its own: the ``make_users`` grammar's words plus every
one-key-over misspelling of them as distractors (typable vocabulary words the LM never saw), a
NPLM trained for a second on grammar lines from other users than the benchmark's.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hushtype.bench_autocorrect import run_autocorrect_bench, typed_words
from keyboard_sim.autocorrect import VocabIndex
from keyboard_sim.dataset import DataConfig, save_jsonl
from keyboard_sim.split import SplitConfig, split_users
from keyboard_sim.touch import QWERTY_ROWS, TouchModel, TypistConfig
from models.data import make_examples
from models.nplm import NPLM, ModelConfig, export_weights
from models.release import load_release, save_release
from models.train import train_central
from models.vocab import BOS, UNK, Vocabulary, tokenize
from tests.conftest import make_users

FIELDS = {
    "naive_word_accuracy",
    "spatial_word_accuracy",
    "lm_word_accuracy",
    "lm_weight",
    "sigma",
    "words",
    "users",
    "seconds",
    "vocab_size",
}


def _neighbour_misspellings(words: list[str]) -> list[str]:
    """Each word with one letter replaced by the key left or right of it (not itself a word)."""
    out = set()
    for row in QWERTY_ROWS:
        for i, char in enumerate(row):
            for other in row[max(i - 1, 0) : i + 2]:
                out.update(w[:j] + other + w[j + 1 :] for w in words for j, c in enumerate(w) if c == char)
    return sorted(out - set(words))


@pytest.fixture(scope="module")
def grammar_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DataConfig]:
    """(release dir, data config): a trained grammar release and a JSONL corpus of other users."""
    root = tmp_path_factory.mktemp("autocorrect")
    lm_users = make_users(40, seed=1)  # the LM's training text; the benchmark types seed-0 users
    words = sorted({w for u in lm_users for line in u.lines for w in tokenize(line)})
    vocab = Vocabulary([UNK, BOS, *words, *_neighbour_misspellings(words)])
    config = ModelConfig(vocab_size=len(vocab), context=4, embed_dim=8, hidden=32, dropout=0.0)
    sentences = [s for u in lm_users for line in u.lines for s in vocab.encode_text(line)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only contend
    try:
        torch.manual_seed(0)
        model = NPLM(config)
        train_central(model, make_examples(sentences, 4, vocab.bos_id), epochs=5, lr=1e-2, batch_size=128)
    finally:
        torch.set_num_threads(threads)
    release = save_release(
        root / "release", export_weights(model), config, vocab, {"trained": "test grammar"}
    )
    assert len(release.vocab) > 200  # distractors outnumber the grammar's 33 words
    corpus = root / "corpus.jsonl"
    save_jsonl(make_users(60, seed=0), corpus)
    return root / "release", DataConfig(source="jsonl", jsonl_path=str(corpus))


def test_contexts_are_the_training_windows(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    vocab = load_release(release_dir).vocab
    users = make_users(3, seed=0)
    users[0].lines.append("The queen hath seen Hamlet; the ghost doth love thy crown!")  # <unk>, 2 sentences
    touch = TouchModel(TypistConfig(sigma=0.0))
    words, n_users = typed_words(
        users, vocab, VocabIndex(vocab.words, touch), touch, context=4, max_words=10**6
    )
    ex = make_examples(
        [s for u in users for line in u.lines for s in vocab.encode_text(line)], 4, vocab.bos_id
    )
    known = ex.y != vocab.unk_id
    assert n_users == 3 and len(words) == known.sum() < len(ex)
    np.testing.assert_array_equal(np.stack([w.context for w in words]), ex.x[known])
    assert [w.word_id for w in words] == ex.y[known].tolist()
    assert all(w.registered == w.word for w in words)  # sigma 0: every tap on its key


def test_noiseless_typing_is_perfect(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    result = run_autocorrect_bench(str(release_dir), data_config=data, sigma=0.0, lm_weight=1.0)
    assert (
        result["naive_word_accuracy"] == result["spatial_word_accuracy"] == result["lm_word_accuracy"] == 1.0
    )
    assert result["lm_weight_sweep_train"] == {}  # given, not swept


def test_cli_lm_prior_beats_spatial_beats_naive(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    cmd = [sys.executable, "-m", "hushtype.cli", "bench", "autocorrect", "--release", str(release_dir)]
    cmd += ["--corpus", "jsonl", "--jsonl", str(data.jsonl_path), "--sigma", "0.6", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert FIELDS <= set(result)
    assert result["sigma"] == 0.6 and result["vocab_size"] == len(load_release(release_dir).vocab)
    held_out = split_users(make_users(60, seed=0), SplitConfig()).heldout
    assert result["users"] == len(held_out) and result["words"] > 300
    # swept on train users; the chosen weight is the sweep's best
    sweep = result["lm_weight_sweep_train"]
    assert sweep and sweep[str(result["lm_weight"])] == max(sweep.values())
    # at sigma 0.6 most words have a wrong key; the spatial channel alone cannot tell a word
    # from its one-key-over misspellings, the grammar LM can
    naive, spatial, lm = (result[f"{k}_word_accuracy"] for k in ("naive", "spatial", "lm"))
    assert naive < 0.3 and spatial > naive + 0.02
    assert lm > 0.9 and lm > spatial + 0.5


def test_refuses_data_split_unlike_the_release(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    release = load_release(release_dir)
    other = release_dir.parent / "other-split"
    card = {"trained": "test", "data": {"source": "jsonl", "split": {**vars(SplitConfig(seed=1))}}}
    save_release(other, release.weights, release.config, release.vocab, card)
    with pytest.raises(ValueError, match="held out"):
        run_autocorrect_bench(str(other), data_config=data)
    run_autocorrect_bench(  # the release's own split is accepted
        str(other), data_config=replace(data, split=SplitConfig(seed=1)), lm_weight=1.0, max_words=50
    )
