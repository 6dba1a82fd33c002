"""A small real federation: Flower simulation engine (Ray) + real Opacus DP-SGD on the devices."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hushtype.simulation import FederationConfig, FederationFailed, run_federated
from keyboard_sim.dataset import save_jsonl
from keyboard_sim.federation import data_config, federation_fields
from tests.conftest import make_users


def test_config_run_config_round_trip() -> None:
    cfg = FederationConfig(
        devices=8, devices_per_round=3, fail_partitions=(1, 4), jsonl_path="x.jsonl", data_source="jsonl"
    )
    back = FederationConfig.from_run_config(cfg.to_run_config())
    assert back == cfg and back.config_hash() == cfg.config_hash()
    by_eps = FederationConfig.from_run_config({"target-epsilon": 8, "rounds": 5})
    assert by_eps.noise_multiplier is None and by_eps.target_epsilon == 8.0
    with pytest.raises(ValueError, match="unknown run-config key"):
        FederationConfig.from_run_config({"num-server-rounds": 3})
    with pytest.raises(ValueError, match="exactly one"):
        FederationConfig(noise_multiplier=1.0, target_epsilon=3.0)
    with pytest.raises(ValueError, match="devices_per_round"):
        FederationConfig(devices=3, devices_per_round=4)
    with pytest.raises(ValueError, match="vocab_source"):
        FederationConfig(vocab_source="wiki")
    with pytest.raises(ValueError, match="min_clients"):
        FederationConfig(min_clients=0)
    with pytest.raises(ValueError, match=r"FederationConfig\.eval_every must be positive"):
        FederationConfig.from_run_config({"eval-every": 0})


def test_data_config_carries_vocabulary_source_and_split_seed() -> None:
    # A warm start is built from the same public split and vocabulary as the federation that uses it
    data = data_config(FederationConfig(vocab_source="symspell", split_seed=7, vocab_size=512))
    assert (data.vocab_source, data.split.seed, data.vocab_size) == ("symspell", 7, 512)
    assert data_config(FederationConfig()).split.seed == 0
    # and back: the fields a benchmark or the demo copies from a DataConfig name the same dataset
    data = data_config(FederationConfig(vocab_source="symspell", split_seed=7, vocab_size=512))
    assert data_config(FederationConfig(**federation_fields(data))) == data


def test_one_config_class_on_every_side() -> None:
    # FederationConfig lives in the neutral `federation` package; device side and runner re-export it
    import federation
    import hushtype.simulation as simulation
    import keyboard_sim.federation as device_side

    assert simulation.FederationConfig is device_side.FederationConfig is federation.FederationConfig


def _tiny_federation(tmp_path: Path, n_users: int = 30, **overrides) -> dict:
    """FederationConfig fields for 6 grammar-corpus devices, 3 a round, a tiny model (seconds per round)."""
    corpus = tmp_path / "corpus.jsonl"
    save_jsonl(make_users(n_users=n_users, lines_per_user=30), corpus)
    fields = dict(
        devices=6,
        devices_per_round=3,
        rounds=2,
        data_source="jsonl",
        jsonl_path=str(corpus),
        vocab_size=64,
        embed_dim=8,
        hidden=16,
        min_device_examples=4,
        max_local_steps=3,
        batch_size=8,
        trainable="b1,w2,b2",
        eval_max_examples=300,
    )
    return {**fields, **overrides}


def test_small_federation_with_a_failing_device(tmp_path: Path) -> None:
    # Prepare: 40 grammar users as a JSONL corpus; 6 devices, 3 per round, 2 rounds; device 0 always fails
    cfg = FederationConfig(
        **_tiny_federation(tmp_path, n_users=40, eval_max_examples=500),
        noise_multiplier=1.0,
        fail_partitions=(0,),
        drop_probability=0.2,
        run_dir=str(tmp_path / "run"),
        seed=1,
    )
    # Execute
    card = run_federated(cfg)
    # Assert: artifacts
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert (run / "progress.png").stat().st_size > 1000
    assert (run / "checkpoints" / "round_002.safetensors").is_file()
    assert (run / "release" / "encoder.safetensors").is_file()
    assert json.loads((run / "model_card.json").read_text())["config_hash"] == cfg.config_hash()
    # privacy: both epsilons finite and positive, and never the same quantity
    assert 0 < card["user_epsilon"] < math.inf
    assert 0 < card["max_device_example_epsilon"] < math.inf
    assert rows[-1]["user_epsilon"] == card["user_epsilon"]
    # faults: the failing device was sampled (seed 1) and the rounds went on without it
    assert card["dropouts"] >= 1
    assert sum(r["participants"] for r in rows) >= 1
    assert all(r["participants"] + r["dropouts"] == 3 for r in rows[1:])
    assert any(0 in r["devices"] for r in rows[1:])  # sampling by device id: the same devices every run


def test_a_seeded_plain_run_repeats_exactly(tmp_path: Path) -> None:
    # Prepare: the same small federation twice (fresh random node ids each time)
    fields = _tiny_federation(tmp_path, aggregation="plain", seed=2)
    rows = []
    for run in ("a", "b"):
        cfg = FederationConfig(**fields, run_dir=str(tmp_path / run))
        # Execute
        run_federated(cfg)
        lines = (tmp_path / run / "rounds.jsonl").read_text().splitlines()
        rows.append([{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines])
    # Assert: same devices, same DP noise, same metrics
    assert rows[0] == rows[1]
    assert rows[0][1]["devices"] != rows[0][2]["devices"] or rows[0][1]["loss"] != rows[0][2]["loss"]


def test_a_restarted_server_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    # Prepare: an uninterrupted 3-round run scored every 2nd round, and a copy of it cut back to "crashed
    # after round 2"
    import shutil

    # (the server's eta schedule and iterate average on: their state must survive the restart too)
    common = _tiny_federation(
        tmp_path,
        rounds=3,
        aggregation="plain",
        seed=3,
        eval_every=2,
        server_lr_schedule="cos",
        server_ema=0.5,
    )
    whole = run_federated(FederationConfig(**common, run_dir=str(tmp_path / "whole")))
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "whole", crashed)
    lines = (crashed / "rounds.jsonl").read_text().splitlines()
    (crashed / "rounds.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # a torn last row
    (crashed / "checkpoints" / "round_003.safetensors").unlink()
    (crashed / "model_card.json").unlink()
    with pytest.raises(ValueError, match="another experiment"):
        run_federated(FederationConfig(**{**common, "seed": 4}, run_dir=str(crashed), resume=True))
    # Execute: restart with resume
    card = run_federated(FederationConfig(**common, run_dir=str(crashed), resume=True))

    # Assert: the same rounds, metrics and user-level epsilon as the run that never stopped
    def rows(run: Path) -> list[dict]:
        skip = ("seconds", "max_device_epsilon", "example_epsilon_mean")  # ledgers count round 3 twice
        return [
            {k: v for k, v in json.loads(x).items() if k not in skip} for x in (run / "rounds.jsonl").open()
        ]

    assert rows(crashed) == rows(tmp_path / "whole")
    # eval_every=2: rounds 0, 2 and the last scored, round 1 recorded and charged all the same
    recorded = rows(tmp_path / "whole")
    assert [r["top1"] is None for r in recorded] == [False, True, False, False]
    assert recorded[1]["participants"] > 0 and recorded[1]["loss"] is None
    assert 0 < recorded[1]["user_epsilon"] < recorded[2]["user_epsilon"] < recorded[3]["user_epsilon"]
    assert card["user_epsilon"] == whole["user_epsilon"] and card["round"] == 3
    assert card["metrics"]["final"] == whole["metrics"]["final"]
    # round 3's devices had already trained once before the crash: their ledgers count it again (the
    # card's max is the public bound, the same for both; the devices' own mean can only be higher)
    assert card["max_device_example_epsilon"] == whole["max_device_example_epsilon"]
    assert card["mean_device_example_epsilon"] >= whole["mean_device_example_epsilon"] - 1e-6
    with pytest.raises(ValueError, match="already done"):
        run_federated(FederationConfig(**common, run_dir=str(crashed), resume=True))
    # the release is the bias-corrected EMA (decay 0.5) of the iterates w_1..w_3, not w_3
    from safetensors.numpy import load_file

    from models.release import load_release

    iterates = [
        load_file(str(tmp_path / "whole" / "checkpoints" / f"round_00{r}.safetensors")) for r in (1, 2, 3)
    ]
    released = load_release(crashed / "release").weights
    for key in ("w2", "b2"):
        ema = (0.25 * iterates[0][key] + 0.5 * iterates[1][key] + iterates[2][key]) / 1.75
        np.testing.assert_allclose(released[key], ema, rtol=1e-5, atol=1e-7)
        assert not np.allclose(released[key], iterates[2][key])


def test_a_bad_configuration_fails_before_ray_starts(tmp_path: Path) -> None:
    # Prepare: more devices than users with enough examples
    cfg = FederationConfig(**_tiny_federation(tmp_path, devices=500), run_dir=str(tmp_path / "run"))
    # Execute / Assert: a ValueError naming the field, in seconds, and no round ran
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"FederationConfig\.devices=500"):
        run_federated(cfg)
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "run" / "rounds.jsonl").exists()
    # the devices check runs on the data alone: a fresh process exits without importing torch or Flower
    config_json = json.dumps(cfg.to_run_config())
    script = (
        "import json, sys\n"
        "from hushtype.simulation import FederationConfig, run_federated\n"
        f"cfg = FederationConfig.from_run_config(json.loads({config_json!r}))\n"
        "try:\n    run_federated(cfg)\nexcept ValueError as err:\n    print(err)\n"
        "print(sorted(m for m in ('torch', 'flwr', 'opacus', 'tenseal') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "FederationConfig.devices=500" in out and out.strip().endswith("[]")
    with pytest.raises(ValueError, match="warm_start"):
        run_federated(
            FederationConfig(**_tiny_federation(tmp_path), warm_start=str(tmp_path), run_dir=str(tmp_path))
        )


@pytest.mark.slow  # a real Ray federation (~50 s on a loaded 2-core machine)
def test_a_run_whose_devices_all_fail_aborts_with_their_error(tmp_path: Path) -> None:
    # Prepare: every device raises; abort after the first round below min_clients
    cfg = FederationConfig(
        **_tiny_federation(tmp_path, rounds=3, aggregation="plain"),
        fail_partitions=tuple(range(6)),
        abort_after_failed_rounds=1,
        run_dir=str(tmp_path / "run"),
    )
    # Execute
    with pytest.raises(FederationFailed, match="injected failure on device") as err:
        run_federated(cfg)
    # Assert: the reason names min_clients; rounds.jsonl recorded round 0 and the failed round 1
    assert "min_clients=2" in str(err.value)
    rows = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["participants"] == 0
    assert any("injected failure" in f for f in rows[1]["failures"])


@pytest.mark.parametrize("sampling", ["windows", "passes"])
def test_a_run_without_user_dp_draws_devices_by_their_reported_windows(tmp_path: Path, sampling: str) -> None:
    # Prepare: users of very different sizes; no user-level DP, so devices may be drawn by data size
    import random

    from federation.passes import PassSchedule, draws_per_pass
    from keyboard_sim.corpus import UserText
    from keyboard_sim.federation import device_examples

    users = [UserText(u.user_id, u.lines[: 4 + 2 * i]) for i, u in enumerate(make_users(30, 64))]
    sized = tmp_path / "sized.jsonl"
    save_jsonl(users, sized)
    cfg = FederationConfig(
        **{**_tiny_federation(tmp_path, rounds=3, aggregation="plain", seed=5), "jsonl_path": str(sized)},
        noise_multiplier=0.0,
        clip=0.0,
        adaptive_clip=False,
        example_noise_multiplier=0.0,
        device_sampling=sampling,
        run_dir=str(tmp_path / "run"),
    )
    windows = [len(device_examples(cfg, p).train) for p in range(cfg.devices)]
    rng = random.Random(cfg.seed)  # the server's sampler, over devices in id order
    if sampling == "windows":  # Efraimidis-Spirakis keys
        expected = []
        for _ in range(cfg.rounds):
            keys = [math.log(rng.random()) / w for w in windows]
            largest = sorted(range(cfg.devices), key=keys.__getitem__)[-cfg.devices_per_round :]
            expected.append(sorted(largest))
    else:  # each device's chunks of K batches, dealt once a pass
        draws = draws_per_pass(windows, cfg.max_local_steps * cfg.batch_size)
        assert len(set(draws)) > 1
        schedule = PassSchedule(draws, cfg.devices_per_round, rng)
        expected = [sorted(schedule.next_round()) for _ in range(cfg.rounds)]
    # Execute
    card = run_federated(cfg)
    # Assert: every round drew the devices the windows they reported at the roll call imply
    rows = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert len(set(windows)) > 1
    assert [r["devices"] for r in rows[1:]] == expected
    # and the model card claims no DP it did not apply
    assert "without user-level noise" in card["trained"] and "no example-level DP" in card["trained"]
