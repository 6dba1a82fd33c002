"""The autocorrect benchmark on a tiny trained release: real decoding, real context windows.

The fixture release (``tests/conftest.py``'s ``small_release``) has words ``w0..w61``, which have
no keys (digits), so this module trains its own: the ``make_users`` grammar's words plus every
one-key-over misspelling of them as distractors (typable vocabulary words the LM never saw), a
NPLM trained for a second on grammar lines from other users than the benchmark's.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hushtype.bench_autocorrect import run_autocorrect_bench, typed_words
from hushtype.cli import main
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
    "human_accuracy",
    "human_accuracy_symspell",
    "human_pairs",
    "touch_wer",
    "touch_wer_symspell",
    "touch_wer_raw",
    "false_correction_rate",
    "ms_per_word",
    "keystroke_savings",
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
SMALL = {"human_pairs": 300, "max_words": 400, "vocab_size": 3000, "sweep_words": 150, "keystroke_words": 150}


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
    release = load_release(release_dir)
    vocab = release.vocab
    users = make_users(3, seed=0)
    users[0].lines.append("The queen hath seen Hamlet; the ghost doth love thy crown!")  # <unk>, 2 sentences
    touch = TouchModel(TypistConfig(sigma=0.0))
    words, n_users = typed_words(users, release, touch, max_words=10**6)
    ex = make_examples(
        [s for u in users for line in u.lines for s in vocab.encode_text(line)], 4, vocab.bos_id
    )
    assert n_users == 3 and len(words) == len(ex)  # every word is typed, in the model's vocabulary or not
    np.testing.assert_array_equal(np.stack([w.context for w in words]), ex.x)
    assert [vocab.id(w.word) for w in words] == ex.y.tolist()
    assert [w.in_lm for w in words] == (ex.y != vocab.unk_id).tolist()


def test_bench_ours_beside_symspell(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    result = run_autocorrect_bench(str(release_dir), data_config=data, sigma=0.5, lm_weight=1.0, **SMALL)
    assert FIELDS <= set(result) and result["lm_weight_sweep_train"] == {}
    assert result["human_pairs"] == 300 and 350 <= result["words"] <= 400  # an even share per user
    # real misspellings: the learned channel beats SymSpell's distance-then-frequency rule
    assert result["human_accuracy"] > result["human_accuracy_symspell"] > 0.5
    # touch: at sigma 0.5 a plain keyboard gets many words wrong; the grammar model repairs most
    assert result["touch_wer"] < 0.5 * result["touch_wer_raw"]
    assert result["touch_wer"] < result["touch_wer_symspell"]
    assert result["false_correction_rate"] <= 0.05 and result["false_correction_words"] > 50
    assert 0.1 < result["keystroke_savings"] < 0.9  # the grammar is predictable, not free
    assert result["ms_per_word"] > 0 and result["ms_per_word_symspell"] > 0


def test_cli_bench_sweeps_the_lm_weight_on_train_users(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    cmd = [sys.executable, "-m", "hushtype.cli", "bench", "autocorrect", "--release", str(release_dir)]
    cmd += ["--corpus", "jsonl", "--jsonl", str(data.jsonl_path), "--sigma", "0.6", "--json"]
    cmd += ["--max-words", "200", "--human-pairs", "50", "--correction-vocab-size", "2000"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert FIELDS <= set(result) and result["sigma"] == 0.6
    assert result["vocab_size"] == len(load_release(release_dir).vocab)
    held_out = split_users(make_users(60, seed=0), SplitConfig()).heldout
    assert result["users"] == len(held_out)
    sweep, fcr = result["lm_weight_sweep_train"], result["lm_weight_sweep_train_false_corrections"]
    allowed = [w for w in sweep if fcr[w] <= 0.01] or [min(fcr, key=fcr.get)]
    assert sweep[str(result["lm_weight"])] == max(sweep[w] for w in allowed)
    assert result["lm_word_accuracy"] > result["naive_word_accuracy"] + 0.3


def test_refuses_data_split_unlike_the_release(grammar_bench: tuple[Path, DataConfig]) -> None:
    release_dir, data = grammar_bench
    release = load_release(release_dir)
    other = release_dir.parent / "other-split"
    card = {"trained": "test", "data": {"source": "jsonl", "split": {**vars(SplitConfig(seed=1))}}}
    save_release(other, release.weights, release.config, release.vocab, card)
    with pytest.raises(ValueError, match="held out"):
        run_autocorrect_bench(str(other), data_config=data)


def test_a_federated_release_names_its_split_by_seed(grammar_bench: tuple[Path, DataConfig]) -> None:
    # Prepare: cards as a federated run writes them (server_app: the data fields, split_seed only)
    release_dir, data = grammar_bench
    release = load_release(release_dir)
    fields = {"source": "jsonl", "jsonl_path": str(data.jsonl_path)}
    for seed in (0, 1):
        card = {"trained": "federated", "data": {**fields, "split_seed": seed}}
        save_release(
            release_dir.parent / f"federated-{seed}", release.weights, release.config, release.vocab, card
        )
    # Execute / Assert: the run's own split is accepted, another seed's refused
    result = run_autocorrect_bench(str(release_dir.parent / "federated-0"), data_config=data, **SMALL)
    assert result["words"] > 0
    with pytest.raises(ValueError, match="held out"):
        run_autocorrect_bench(str(release_dir.parent / "federated-1"), data_config=data)


def _run(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, stdin: str = ""):
    """``hushtype ARGS`` in this process (the codespell tables are cached): (exit status, stdout)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(args)
    return status, capsys.readouterr().out


def test_correct_reads_lines_and_prints_json(
    grammar_bench: tuple[Path, DataConfig], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_dir, _ = grammar_bench
    lines = "teh\nthe king doth\tlvoe\nthe\n"
    status, out = _run(
        ["correct", "--vocab-size", "3000", "--release", str(release_dir)], capsys, monkeypatch, lines
    )
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["word"] for r in rows] == ["the", "love", "the"]
    assert rows[1]["context"] == ["the", "king", "doth"] and rows[1]["corrected"] and not rows[2]["corrected"]
    assert {"word", "score", "channel", "prior"} <= set(rows[0]["candidates"][0])
    # a bad line is reported in place, the others still answered, and the exit status says so
    status, out = _run(["correct", "--vocab-size", "3000"], capsys, monkeypatch, "café\nrecieve\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 2 and "no key" in rows[0]["error"] and rows[1]["word"] == "receive"
    assert _run(["correct", "--vocab-size", "0"], capsys, monkeypatch, "the\n")[0] == 2


def test_type_shows_taps_registration_correction_and_strip(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["type", "the quick brown fox", "--sigma", "0.5", "--vocab-size", "3000", "--json"]
    status, out = _run(args, capsys, monkeypatch)
    assert status == 0
    result = json.loads(out)
    assert result["text"] == "the quick brown fox" and len(result["words"]) == 4
    assert all(len(w["strip"]) == 3 and w["corrected"] in w["strip"] for w in result["words"])
    assert len(result["words"][0]["taps"]) >= 2
    status, out = _run(["type", "hello there", "--vocab-size", "3000"], capsys, monkeypatch)
    assert status == 0 and "registered" in out and "corrected" in out
