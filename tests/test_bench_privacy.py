"""bench privacy's pieces: canary log-perplexity as training windows see it, chance, and its settings."""

from __future__ import annotations

import numpy as np
import torch

from federation import FederationConfig
from hushtype.bench_privacy import PrivacyBenchConfig, canary_scores, chance_exposure
from keyboard_sim.canaries import Canary
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
    assert set(PrivacyBenchConfig(quick=True).settings(FederationConfig())) == {
        "no_dp",
        "dp_shipped",
        "dp_eps_64",
    }
