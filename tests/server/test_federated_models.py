"""Any model kind through the federated pipeline: real Flower + Opacus + CKKS aggregation, a split release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hushtype.simulation import FederationConfig, run_federated
from models.factory import default_trainable
from models.release import load_release
from tests.server.test_simulation import _tiny_federation


def _tiny_lstm(tmp_path: Path, **overrides) -> dict:
    """The tiny federation with an LSTM (context 8, embed 8, h 16; the shipped width 256)."""
    return _tiny_federation(tmp_path, model="lstm", context=8, trainable="default", **overrides)


def test_a_tiny_lstm_federation_writes_a_split_release(tmp_path: Path) -> None:
    # Prepare: 6 devices, 3 a round, 2 rounds, HE aggregation, the LSTM's default (bias-like) arrays
    cfg = FederationConfig(**_tiny_lstm(tmp_path), noise_multiplier=0.5, run_dir=str(tmp_path / "run"))
    # Execute
    card = run_federated(cfg)
    # Assert: two rounds with devices, and a release of the LSTM with its encoder and head parts
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["participants"] >= 2 for r in rows[1:])
    release = load_release(tmp_path / "run" / "release")
    assert release.config.kind == "lstm" and release.config.context == 8
    assert (release.config.embed_dim, release.config.hidden) == (8, 16)
    assert "enc.lstm.weight_hh_l0" in release.encoder and set(release.head) == {"w2", "b2", "beta"}
    assert release.card["parts"]["head"] == ["b2", "beta", "w2"]
    assert 0 < card["user_epsilon"] < float("inf")
    # the devices trained: the aggregated update moved the default arrays and nothing else
    from safetensors.numpy import load_file

    start = load_file(str(tmp_path / "run" / "checkpoints" / "round_000.safetensors"))
    moved = {k for k, v in release.weights.items() if k in start and abs(v - start[k]).max() > 0}
    assert moved == set(default_trainable(release.config))


def test_a_bad_model_setting_fails_before_ray_starts(tmp_path: Path, monkeypatch) -> None:
    # Prepare: Ray must never start
    import flwr.simulation

    def no_ray(**_: object) -> None:
        raise AssertionError("the simulation started")

    monkeypatch.setattr(flwr.simulation, "run_simulation", no_ray)
    run = str(tmp_path / "run")
    # Execute / Assert: an NPLM array name on the LSTM, an unknown name, the wrong window, a bad kind
    with pytest.raises(ValueError, match=r"FederationConfig\.trainable='b1,b2'.*'lstm'"):
        run_federated(FederationConfig(**{**_tiny_lstm(tmp_path), "trainable": "b1,b2"}, run_dir=run))
    with pytest.raises(ValueError, match=r"FederationConfig\.trainable='enc\.nope'"):
        run_federated(FederationConfig(**{**_tiny_lstm(tmp_path), "trainable": "enc.nope"}, run_dir=run))
    with pytest.raises(ValueError, match=r"FederationConfig\.trainable='lora4,enc\.norm\.bias'.*head arrays"):
        run_federated(
            FederationConfig(**{**_tiny_lstm(tmp_path), "trainable": "lora4,enc.norm.bias"}, run_dir=run)
        )
    with pytest.raises(ValueError, match=r"FederationConfig\.trainable='lora99'.*r <= 16"):
        run_federated(FederationConfig(**{**_tiny_lstm(tmp_path), "trainable": "lora99"}, run_dir=run))
    with pytest.raises(ValueError, match=r"FederationConfig\.context=4 .*'lstm' reads 8"):
        run_federated(FederationConfig(**{**_tiny_lstm(tmp_path), "context": 4}, run_dir=run))
    with pytest.raises(ValueError, match=r"FederationConfig\.model"):
        FederationConfig(model="gru")
    assert not (tmp_path / "run" / "rounds.jsonl").exists()


def test_a_lora_trainable_names_the_adapter_and_the_server_starts_it_at_zero() -> None:
    from keyboard_sim.federation import trainable_arrays
    from models.config import ModelConfig
    from models.lora import LORA_A, LORA_B
    from server.server_app import adapter_weights

    model = ModelConfig(vocab_size=64, context=8, embed_dim=8, hidden=16, kind="lstm", width=16, layers=1)
    cfg = FederationConfig(model="lstm", context=8, trainable="lora4,b2", lora_seed=5)
    assert trainable_arrays(cfg, model) == (LORA_B, "b2")
    adapter = adapter_weights(cfg, model)
    assert adapter[LORA_A].shape == (4, 16) and adapter[LORA_B].shape == (64, 4)
    assert not adapter[LORA_B].any() and adapter_weights(FederationConfig(), model) == {}


@pytest.mark.slow  # a real Ray federation of the whole LSTM (~45 s on a loaded 2-core machine)
def test_the_no_dp_arm_trains_every_lstm_array_through_flower(tmp_path: Path) -> None:
    # Prepare: the bench's no-privacy arm on the tiny LSTM federation: every array, two passes of data
    from safetensors.numpy import load_file

    from hushtype.bench_federated import plain_fl_config

    shipped = FederationConfig(**_tiny_lstm(tmp_path), run_dir=str(tmp_path / "run"))
    cfg = plain_fl_config(shipped, data_epochs=2.0, device_windows=[50] * 6)  # < K batches of 8 each
    # Execute
    card = run_federated(cfg)
    # Assert: 2 passes of 6 one-draw devices, 5 a round; plain-torch devices moved every array; no noise
    release = load_release(tmp_path / "run" / "release")
    start = load_file(str(tmp_path / "run" / "checkpoints" / "round_000.safetensors"))
    assert cfg.device_sampling == "passes" and cfg.devices_per_round == 5 and cfg.rounds == 3  # 12 draws
    assert all(abs(release.weights[k] - start[k]).max() > 0 for k in start if k != "beta")
    assert card["user_epsilon"] is None  # infinite: no noise (the card writes None)


@pytest.mark.slow  # a real Ray federation (~40 s on a loaded 2-core machine)
def test_a_lora_federation_trains_b_and_releases_the_merged_head(tmp_path: Path) -> None:
    # Prepare: the tiny LSTM federation, devices train a rank-2 adapter and the output bias, HE sums
    import numpy as np
    from safetensors.numpy import load_file

    from models.lora import LORA_A, LORA_B, merge_lora

    cfg = FederationConfig(
        **{**_tiny_lstm(tmp_path), "trainable": "lora2,b2"},
        noise_multiplier=0.5,
        run_dir=str(tmp_path / "run"),
    )
    # Execute
    run_federated(cfg)
    # Assert: B moved from 0 (A did not), w2 and the encoder did not; the release is the merged plain head
    start = load_file(str(tmp_path / "run" / "checkpoints" / "round_000.safetensors"))
    final = load_file(str(tmp_path / "run" / "checkpoints" / "round_002.safetensors"))
    assert not start[LORA_B].any() and np.abs(final[LORA_B]).max() > 0
    assert {k for k in start if np.abs(final[k] - start[k]).max() > 0} == {LORA_B, "b2"}
    release = load_release(tmp_path / "run" / "release")
    assert set(release.head) == {"w2", "b2", "beta"} and LORA_A not in release.weights
    np.testing.assert_allclose(release.weights["w2"], merge_lora(final)["w2"], atol=1e-6)
    assert np.abs(release.weights["w2"] - start["w2"]).max() > 0
