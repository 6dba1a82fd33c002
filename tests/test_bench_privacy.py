"""bench privacy's pieces: canary log-perplexity as training windows see it, chance, and its settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from federation import FederationConfig
from hushtype.bench_privacy import PrivacyBenchConfig, canary_scores, chance_exposure, run_privacy_bench
from keyboard_sim.canaries import Canary
from keyboard_sim.corpus import UserText
from keyboard_sim.dataset import DataConfig, save_jsonl
from models.data import make_examples
from models.nplm import NPLM, ModelConfig

TINY = ModelConfig(vocab_size=40, context=4, embed_dim=8, hidden=16, dropout=0.0)


def test_canary_scores_match_the_planted_windows() -> None:
    # Prepare: a canary with a 3-word prefix, two candidate secrets
    torch.manual_seed(0)
    model = NPLM(TINY).eval()
    canary = Canary(copies=1, users=1, index=0, prefix=(5, 6, 7), secret=(10, 11, 12, 13), devices=(0,))
    secrets = np.array([canary.secret, (20, 21, 22, 23)])
    # Execute
    scores = canary_scores(model, canary, secrets, context=4)
    # Assert: -sum log p over the secret's windows, built exactly as planting builds them
    for row, score in zip(secrets, scores, strict=True):
        windows = make_examples([[*canary.prefix, *row]], 4, bos_id=1)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.as_tensor(windows.x[3:])).double(), -1)
        expected = -float(logp[torch.arange(4), torch.as_tensor(windows.y[3:])].sum())
        assert abs(score - expected) < 1e-6  # float32 logits, batched differently


def test_chance_and_settings() -> None:
    assert abs(chance_exposure(999) - 1.4364) < 1e-3 and chance_exposure(1) == 0.5
    full = PrivacyBenchConfig().settings(FederationConfig())
    assert full["no_dp"].trainable != "default" and full["no_dp"].noise_multiplier == 0.0
    control = full["shipped_no_noise"]
    assert control.trainable == FederationConfig().trainable and control.clip == 0.0
    assert full["dp_eps_4"].target_epsilon == 4.0 and full["dp_shipped"] == FederationConfig(
        run_dir=full["dp_shipped"].run_dir
    )
    # canaries are planted where the uniform sampler draws most: every setting draws uniformly
    assert {cfg.device_sampling for cfg in full.values()} == {"uniform"}
    assert set(PrivacyBenchConfig(quick=True).settings(FederationConfig())) == {
        "no_dp",
        "dp_shipped",
        "dp_eps_64",
    }


@pytest.mark.slow
def test_quick_audit_runs_end_to_end_on_a_small_corpus(small_users: list[UserText], tmp_path: Path) -> None:
    # Prepare: the quick audit (no_dp, dp_shipped, dp_eps_64: real Flower runs, HE for dp_shipped) on
    # the 60-user grammar corpus, whose users also say the canary's prefix; 15 alternative secrets a canary
    corpus = tmp_path / "corpus.jsonl"
    save_jsonl([UserText(u.user_id, [*u.lines, "My secret number is low."]) for u in small_users], corpus)
    bench = PrivacyBenchConfig(quick=True, out=str(tmp_path / "audit"), candidates=15, served_canaries=1)
    data = DataConfig(source="jsonl", jsonl_path=str(corpus))
    # Execute
    result = run_privacy_bench(bench, data)
    # Assert: every setting ran on the sized federation and was charged by the accountant; exposures lie
    # within the estimator's range; the served path ranks as the released model does
    assert set(result["exposure"]) == {"no_dp", "dp_shipped", "dp_eps_64"}
    assert result["user_epsilon"]["no_dp"] is None  # no noise: no finite bound
    assert 0 < result["user_epsilon"]["dp_shipped"] <= 8.0 + 1e-6
    assert 0 < result["user_epsilon"]["dp_eps_64"] <= 64.0 + 1e-6
    cells = [s["mean"] for by_cell in result["exposure"].values() for s in by_cell.values()]
    assert cells and all(0.0 <= c <= result["exposure_max"] for c in cells)
    assert result["served"]["ranks_agree"] and Path(result["exposure_png"]).is_file()
