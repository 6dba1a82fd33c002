"""The `flwr run .` app: its [tool.flwr.app.config] table and, slow, a real run through scripts/flwr-run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from keyboard_sim.dataset import save_jsonl
from keyboard_sim.federation import FederationConfig
from tests.conftest import make_users

ROOT = Path(__file__).resolve().parents[2]


def _app_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["tool"]["flwr"]["app"]["config"]


def test_app_config_lists_every_field_with_its_default() -> None:
    # Flower rejects --run-config keys the table does not list: every field must be there
    table = _app_config()
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(FederationConfig) if f.name != "extra"}
    assert set(table) == fields
    assert FederationConfig.from_run_config(table) == FederationConfig(run_dir="runs/flwr")


def test_empty_string_unsets_optional_fields_and_noise_rules() -> None:
    table = _app_config()
    cfg = FederationConfig.from_run_config({**table, "max-local-steps": "", "eval-max-examples": ""})
    assert cfg.max_local_steps is None and cfg.eval_max_examples is None and cfg.max_users is None
    by_eps = FederationConfig.from_run_config({**table, "target-epsilon": 4})
    assert by_eps.noise_multiplier is None and by_eps.target_epsilon == 4.0
    by_sigma = FederationConfig.from_run_config({**table, "noise-multiplier": 0.7})
    assert by_sigma.noise_multiplier == 0.7 and by_sigma.target_epsilon is None
    both = FederationConfig.from_run_config({**table, "noise-multiplier": 0.7, "target-epsilon": 4})
    assert both.noise_multiplier == 0.7 and both.target_epsilon is None  # overrides merge into the table
    with pytest.raises(ValueError, match="exactly one"):
        FederationConfig(noise_multiplier=0.7, target_epsilon=4.0)


@pytest.mark.slow
def test_flwr_run_end_to_end(tmp_path: Path) -> None:
    # Prepare: a tiny JSONL corpus; 4 devices, 2 per round, 1 round, HE aggregation (key authority too)
    corpus = tmp_path / "corpus.jsonl"
    save_jsonl(make_users(n_users=30, lines_per_user=30), corpus)
    run_dir = tmp_path / "run"
    overrides = (
        f'devices=4 devices-per-round=2 rounds=1 aggregation="he" data-source="jsonl" '
        f'jsonl-path="{corpus}" vocab-size=64 embed-dim=8 hidden=16 min-device-examples=4 '
        f'max-local-steps=3 batch-size=8 eval-max-examples=500 run-dir="{run_dir}"'
    )
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr")}
    # Execute
    proc = subprocess.run(
        [str(ROOT / "scripts" / "flwr-run"), "--run-config", overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Assert
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "ended with status finished:completed" in proc.stdout
    card = json.loads((run_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["round"] == 1 and card["participants"] == 2
