"""What the aggregator receives in a real Flower round with HE: ciphertexts and ids, nothing per device."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from ckks.codec import HE_STYPE
from hushtype.simulation import FederationConfig, run_federated
from keyboard_sim.canaries import participation
from keyboard_sim.dataset import save_jsonl
from server.strategies.delta_aggregation import DeltaAggregation
from tests.conftest import make_users

ROW_AGGREGATES = {  # rounds.jsonl: every key, and why it is not one device's value
    "round", "top1", "top3", "loss", "perplexity", "user_epsilon", "seconds",  # server-side / public
    "max_device_epsilon",  # a bound from the public config
    "participants", "dropouts", "devices", "failures",  # participation: visible, documented
    "clip", "unclipped_fraction",  # the clip and the noised mean bit
    "train_loss", "delta_norm", "clipped_fraction", "example_epsilon_mean", "num_examples_mean",  # means
}  # fmt: skip


def clear_values(content: RecordDict) -> list[str]:
    """Everything in a reply's content that is not a ciphertext: the offending records (empty = clean)."""
    found = [f"metrics {k}: {dict(r)}" for k, r in content.metric_records.items()]
    found += [f"config {k}" for k in content.config_records]
    for name, record in content.array_records.items():
        found += [f"array {name}/{k} ({a.stype})" for k, a in record.items() if a.stype != HE_STYPE]
    return found


def test_the_inspection_flags_clear_values() -> None:
    # the check itself can fail: a reply as devices used to send it (clear metrics, plain arrays)
    old = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros(2, np.float32))}),
            "metrics": MetricRecord({"num-examples": 12, "train-loss": 4.2}),
        }
    )
    assert len(clear_values(old)) == 2


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[list[Message]]:
    """Every reply list the strategy's aggregation receives (the aggregator's whole view of a round)."""
    rounds: list[list[Message]] = []
    original = DeltaAggregation.aggregate_train

    def spy(self, server_round, replies):  # noqa: ANN001, ANN202 - as Strategy
        replies = list(replies)
        rounds.append(replies)
        return original(self, server_round, replies)

    monkeypatch.setattr(DeltaAggregation, "aggregate_train", spy)
    return rounds


def test_he_round_gives_the_aggregator_only_ciphertexts_and_ids(
    tmp_path: Path, captured: list[list[Message]]
) -> None:
    # Prepare: a real HE federation, weighting by examples (n_i must stay encrypted), DP on both levels
    corpus = tmp_path / "corpus.jsonl"
    save_jsonl(make_users(n_users=24, lines_per_user=16), corpus)
    config = FederationConfig(
        devices=4, devices_per_round=3, rounds=2, aggregation="he", weighting="examples",
        data_source="jsonl", jsonl_path=str(corpus), vocab_size=64, embed_dim=8, hidden=16,
        min_device_examples=4, max_local_steps=2, batch_size=8, trainable="b1,b2", noise_multiplier=1.0,
        run_dir=str(tmp_path / "run"), eval_max_examples=200, seed=2,
    )  # fmt: skip
    # Execute
    card = run_federated(config)
    # Assert: each reply is one ciphertext; its sender is only a node id
    replies = [m for r in captured for m in r]
    assert len(captured) == 2 and len(replies) == 6
    for msg in replies:
        assert not msg.has_error() and clear_values(msg.content) == [], clear_values(msg.content)
        (record,) = msg.content.array_records.values()
        assert [a.stype for a in record.values()] == [HE_STYPE]
        assert isinstance(msg.metadata.src_node_id, int)
    # the server's records hold aggregates only: known keys, the devices' statistics as finite means
    rows = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert all(set(row) <= ROW_AGGREGATES for row in rows), [set(r) - ROW_AGGREGATES for r in rows]
    trained = [r for r in rows if r["round"] > 0]
    assert all(r["participants"] == 3 for r in trained)
    for row in trained:
        assert 4 <= row["num_examples_mean"] < 1e4 and 0 < row["train_loss"] < 20
        assert 0 < row["example_epsilon_mean"] <= row["max_device_epsilon"] < math.inf
    assert card["mean_device_example_epsilon"] == trained[-1]["example_epsilon_mean"]
    assert "DP-FedAvg updates" in card["trained"] and "example-level DP-SGD" in card["trained"]
    # the canary planner's replay of the sampler (keyboard_sim.canaries.participation) is what happened
    sampled = [d for r in trained for d in r["devices"]]
    assert participation(config) == [sampled.count(d) for d in range(config.devices)]
