"""PlainFedAvg on tiny arrays whose results can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from federation.wire import encode_stats
from server.strategies import DeltaFedAvgM, PlainMean, RoundSetup, make_strategy
from server.strategies.plain_fedavg import PlainFedAvg, arrays_to_numpy, numpy_to_arrays
from tests.server.strategies.conftest import FakeGrid

W0 = {"w": np.array([1.0, 2.0], np.float32), "beta": np.array(1.0, np.float32)}


def _start_round(strategy: PlainFedAvg, server_round: int, weights: dict, nodes: list[int]) -> list[Message]:
    return list(
        strategy.configure_train(server_round, numpy_to_arrays(weights), ConfigRecord(), FakeGrid(nodes))
    )


def _reply(ins: Message, delta: list[float], n: int = 1) -> Message:
    stats = encode_stats({"num-examples": n, "train-loss": 1.0, "example-epsilon": float(n)})
    content = RecordDict({"arrays": numpy_to_arrays({"w": np.array(delta, np.float32), **stats})})
    return Message(content, reply_to=ins)


def test_uniform_mean_of_deltas() -> None:
    # Prepare
    strategy = PlainFedAvg(devices_per_round=2)
    sent = _start_round(strategy, 1, W0, [7, 8])
    # Execute: Delta_1 = [1, 0], Delta_2 = [0, 2] -> mean [0.5, 1]
    arrays, metrics = strategy.aggregate_train(1, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 2])])
    # Assert: w = [1, 2] + [0.5, 1]; beta carried unchanged
    out = arrays_to_numpy(arrays)
    np.testing.assert_allclose(out["w"], [1.5, 3.0])
    np.testing.assert_allclose(out["beta"], 1.0)
    assert metrics["participants"] == 2 and metrics["dropouts"] == 0
    assert metrics["example-epsilon"] == pytest.approx(1.0) and metrics["train-loss"] == pytest.approx(1.0)


def test_server_lr_and_momentum_over_two_rounds() -> None:
    strategy = PlainFedAvg(devices_per_round=2, server_lr=2.0, server_momentum=0.5)
    sent = _start_round(strategy, 1, W0, [7, 8])
    arrays, _ = strategy.aggregate_train(1, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 2])])
    w1 = arrays_to_numpy(arrays)
    np.testing.assert_allclose(w1["w"], [2.0, 4.0])  # v_1 = [0.5, 1]; w = [1, 2] + 2 v_1
    sent = _start_round(strategy, 2, w1, [7, 8])
    arrays, _ = strategy.aggregate_train(2, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 2])])
    # v_2 = 0.5 * [0.5, 1] + [0.5, 1] = [0.75, 1.5]; w = [2, 4] + 2 v_2 = [3.5, 7]
    np.testing.assert_allclose(arrays_to_numpy(arrays)["w"], [3.5, 7.0])


def test_examples_weighting() -> None:
    strategy = PlainFedAvg(devices_per_round=2, weighting="examples")
    sent = _start_round(strategy, 1, W0, [7, 8])
    arrays, _ = strategy.aggregate_train(1, [_reply(sent[0], [1, 0], n=1), _reply(sent[1], [0, 2], n=3)])
    np.testing.assert_allclose(arrays_to_numpy(arrays)["w"], [1.25, 3.5])  # + 0.25 [1,0] + 0.75 [0,2]


def test_failed_silent_and_malformed_devices_are_dropouts() -> None:
    # Prepare: 4 sampled; one answers, one raises, one never replies, one sends a non-plain update
    strategy = PlainFedAvg(devices_per_round=4)
    sent = _start_round(strategy, 1, W0, [1, 2, 3, 4])
    good = _reply(sent[0], [2, 2])
    failed = Message(Error(code=0, reason="injected failure"), reply_to=sent[1])
    bad = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {"w": Array(dtype="ckks", shape=(2,), stype="ckks.vector", data=b"\x00")}
                ),
                "metrics": MetricRecord({"num-examples": 1}),
            }
        ),
        reply_to=sent[3],
    )
    # Execute
    arrays, metrics = strategy.aggregate_train(1, [good, failed, bad])
    # Assert: the round proceeds with the one good update
    np.testing.assert_allclose(arrays_to_numpy(arrays)["w"], [3.0, 4.0])
    assert metrics["participants"] == 1 and metrics["dropouts"] == 3 and metrics["sampled"] == 4
    reasons = " ".join(strategy.rounds[1]["failures"])
    assert "injected failure" in reasons and "no reply" in reasons and "malformed" in reasons


def test_no_usable_reply_keeps_model() -> None:
    strategy = PlainFedAvg(devices_per_round=2)
    sent = _start_round(strategy, 1, W0, [1, 2])
    arrays, metrics = strategy.aggregate_train(1, [Message(Error(code=0, reason="x"), reply_to=sent[0])])
    assert arrays is None
    assert metrics["participants"] == 0 and metrics["dropouts"] == 2


def test_sampling_is_seeded_and_without_replacement() -> None:
    nodes = list(range(100, 120))
    a = [m.metadata.dst_node_id for m in _start_round(PlainFedAvg(devices_per_round=5, seed=3), 1, W0, nodes)]
    b = [m.metadata.dst_node_id for m in _start_round(PlainFedAvg(devices_per_round=5, seed=3), 1, W0, nodes)]
    assert a == b and len(set(a)) == 5 and set(a) <= set(nodes)


def test_sampling_follows_device_ids_whatever_the_node_ids() -> None:
    # Two runs of one federation: the simulation gives its 20 SuperNodes fresh random node ids each time
    rng = np.random.default_rng(0)
    sampled = []
    for _ in range(2):
        node_ids = [int(n) for n in rng.choice(2**62, size=20, replace=False)]
        strategy = PlainFedAvg(devices_per_round=5, seed=3)
        strategy.device_ids = {node: device for device, node in enumerate(node_ids)}  # the roll call
        messages = _start_round(strategy, 1, W0, node_ids)
        sampled.append([strategy.device_ids[m.metadata.dst_node_id] for m in messages])
    assert sampled[0] == sampled[1] and len(set(sampled[0])) == 5


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="learning rate"):
        PlainFedAvg(devices_per_round=2, server_lr=0.0)
    with pytest.raises(ValueError, match="weighting"):
        PlainFedAvg(devices_per_round=2, weighting="median")
    setup = RoundSetup(mean_update=PlainMean(), devices_per_round=2)
    with pytest.raises(ValueError, match="server optimizer"):
        make_strategy("fedadagrad", setup, server_lr=0.1)
    assert isinstance(make_strategy("fedavgm", setup, server_lr=1.0), DeltaFedAvgM)


def test_fedadam_steps_on_the_mean_delta() -> None:
    # Prepare: FedAdam (b1=0.9, b2=0.99, tau=1e-3, eta=0.1) over two plain deltas [1, 0] and [0, 2]
    strategy = make_strategy(
        "fedadam",
        RoundSetup(mean_update=PlainMean(), devices_per_round=2),
        server_lr=0.1,
        server_momentum=0.9,
    )
    sent = _start_round(strategy, 1, W0, [1, 2])
    # Execute
    arrays, _ = strategy.aggregate_train(1, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 2])])
    # Assert: Delta = [0.5, 1]; m = 0.1 Delta; v = 0.01 Delta^2; eta_hat = 0.1 sqrt(1-.99^2) / (1-.9^2)
    delta = np.array([0.5, 1.0])
    eta_hat = 0.1 * np.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    expected = W0["w"] + eta_hat * (0.1 * delta) / (np.sqrt(0.01 * delta**2) + 1e-3)
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["fedadam", "fedavgm"])
def test_server_lr_schedule_scales_eta_at_the_runs_round(optimizer: str) -> None:
    # Prepare: the same strategy with and without a linear decay over 4 rounds (round 3: 0.5 x eta)
    setup = dict(server_lr=0.1, server_momentum=0.0)
    plain = make_strategy(optimizer, RoundSetup(mean_update=PlainMean(), devices_per_round=2), **setup)
    decayed = make_strategy(
        optimizer,
        RoundSetup(mean_update=PlainMean(), devices_per_round=2),
        **setup,
        lr_schedule=("lin", 4, 0.0),
    )
    decayed.resume_after(2, 2)  # Flower's round 1 is the run's round 3
    steps = []
    for strategy in (plain, decayed):
        sent = _start_round(strategy, 1, W0, [1, 2])
        arrays, _ = strategy.aggregate_train(1, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 2])])
        steps.append(arrays_to_numpy(arrays)["w"] - W0["w"])
    # Assert: half the undecayed step (FedAdam's bias correction is then at round 3, not 1: compare
    # with the undecayed rule at round 3 for it)
    if optimizer == "fedadam":
        correction = lambda r: np.sqrt(1 - 0.99 ** (r + 1)) / (1 - 0.0 ** (r + 1))  # noqa: E731 (b1 = 0)
        steps[0] = steps[0] * correction(3) / correction(1)
    np.testing.assert_allclose(steps[1], 0.5 * steps[0], rtol=1e-5)
    assert np.all(np.abs(steps[1]) > 0)


def test_size_weighted_sampling_draws_devices_in_proportion_to_their_windows() -> None:
    # Prepare: 40 devices, the first 10 with 10x the windows of the others; m = 4 a round
    windows = [1000] * 10 + [100] * 30
    strategy = make_strategy(
        "fedavg",
        RoundSetup(mean_update=PlainMean(), devices_per_round=4, device_sampling="windows"),
        server_lr=1.0,
    )
    strategy.device_windows = dict(enumerate(windows))
    # Execute: 2,000 rounds of draws
    drawn = np.zeros(40)
    for _ in range(2000):
        for node in strategy._sample_by_size(list(range(40))):
            drawn[node] += 1
    # Assert: a big device is drawn ~10x as often as a small one (not 1x: uniform), m distinct a round
    ratio = drawn[:10].mean() / drawn[10:].mean()
    assert 7 < ratio < 13
    assert drawn.sum() == 2000 * 4


def _resumed(windows: dict[int, int], rounds_done: int, **sampling: object):  # noqa: ANN202
    """A 3-a-round strategy over 12 devices with these windows, resumed after ``rounds_done`` rounds."""
    setup = RoundSetup(mean_update=PlainMean(), devices_per_round=3, **sampling)
    strategy = make_strategy("fedavg", setup, server_lr=1.0)
    strategy.device_windows = windows
    strategy.resume_after(rounds_done, devices=12)
    return strategy


def test_a_resumed_size_weighted_sampler_draws_what_the_uninterrupted_one_would() -> None:
    windows = {node: 50 + 37 * node for node in range(12)}
    uninterrupted = _resumed(windows, 0, device_sampling="windows")
    draws = [uninterrupted._sample_by_size(list(range(12))) for _ in range(5)]
    resumed = _resumed(windows, 3, device_sampling="windows")
    assert [resumed._sample_by_size(list(range(12))) for _ in range(2)] == draws[3:]


def test_a_resumed_pass_schedule_draws_what_the_uninterrupted_one_would() -> None:
    # Prepare: 12 devices of 1 to 4 chunks of 100 windows, 30 chunks in all: 10 rounds of 3 a pass
    sizes = [60, 100, 150, 200, 101, 199, 250, 300, 201, 400, 350, 280]
    windows = dict(enumerate(sizes))
    passes = dict(device_sampling="passes", pass_chunk=100)
    # Execute: 10 rounds (one pass: 30 draws), and the same run resumed after 4
    uninterrupted = _resumed(windows, 0, **passes)
    draws = [uninterrupted._sample_by_passes(list(range(12))) for _ in range(10)]
    resumed = _resumed(windows, 4, **passes)
    # Assert: each device drawn ceil(windows / 100) times in the pass; the resumed run continues it
    drawn = [node for r in draws for node in r]
    assert {node: drawn.count(node) for node in windows} == {n: -(-w // 100) for n, w in windows.items()}
    assert [resumed._sample_by_passes(list(range(12))) for _ in range(6)] == draws[4:]
    with pytest.raises(ValueError, match="pass_chunk"):
        RoundSetup(mean_update=PlainMean(), devices_per_round=3, device_sampling="passes")
