"""Arrays a round leaves unchanged travel by reference (``federation.public_base``): file, digest, merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from federation.public_base import (
    BASE_PATH_KEY,
    BASE_SHA_KEY,
    changed_arrays,
    read_base,
    with_base,
    write_base,
)
from federation.wire import encode_stats
from server.strategies import PlainMean, RoundSetup, make_strategy
from server.strategies.delta_aggregation import arrays_to_numpy, numpy_to_arrays
from tests.server.strategies.conftest import FakeGrid, _task_identity  # noqa: F401 - autouse fixture

W0 = {
    "enc": np.arange(6, dtype=np.float32).reshape(2, 3),  # frozen: devices train only "b2"
    "b2": np.array([0.5, -0.5], np.float32),
    "beta": np.array(1.0, np.float32),
}


def test_the_base_file_round_trips_and_is_checked_against_its_digest(tmp_path: Path) -> None:
    # Execute
    path, digest = write_base(W0, tmp_path)
    # Assert: named by its digest, read back exactly, and a second write is the same file
    assert path.name == f"{digest}.safetensors"
    back = read_base(path, digest)
    assert all(np.array_equal(back[k], W0[k]) for k in W0)
    assert write_base(W0, tmp_path) == (path, digest)
    # a file with other bytes than announced, or none at all, is a clear error naming it
    other = {**W0, "b2": np.array([9.0, 9.0], np.float32)}
    other_path, _ = write_base(other, tmp_path / "other")
    with pytest.raises(ValueError, match="does not match the announced"):
        read_base(other_path, "0" * 64)
    with pytest.raises(ValueError, match="base_by_reference=false"):
        read_base(tmp_path / "missing.safetensors", "1" * 64)


def test_changed_arrays_compares_values_not_dtypes() -> None:
    w = {k: v.astype(np.float64) for k, v in W0.items()}  # a server optimizer's float64 output
    assert changed_arrays(w, W0) == []
    w["b2"] = w["b2"] + 1e-3
    w["new"] = np.zeros(1)
    assert changed_arrays(w, W0) == ["b2", "new"]


def test_with_base_fills_in_what_the_message_left_out(tmp_path: Path) -> None:
    path, digest = write_base(W0, tmp_path)
    received = {"b2": np.array([1.0, 2.0], np.float32)}
    merged = with_base(received, {BASE_SHA_KEY: digest, BASE_PATH_KEY: str(path)})
    assert set(merged) == set(W0) and np.array_equal(merged["b2"], [1.0, 2.0])
    assert np.array_equal(merged["enc"], W0["enc"])
    assert with_base(received, {}) is received  # no base announced: the message is the whole model


def _reply(ins: Message, b2: list[float]) -> Message:
    stats = encode_stats({"num-examples": 10, "train-loss": 1.0, "example-epsilon": 1.0})
    content = RecordDict({"arrays": numpy_to_arrays({"b2": np.array(b2, np.float32), **stats})})
    return Message(content, reply_to=ins)


def test_fedadam_rounds_send_only_the_arrays_that_moved(tmp_path: Path) -> None:
    # Prepare: FedAdam over plain means, messages by reference to the run's base
    setup = RoundSetup(mean_update=PlainMean(), devices_per_round=2, base_dir=tmp_path / "base")
    strategy = make_strategy("fedadam", setup, server_lr=0.1, min_available_nodes=2)
    weights = dict(W0)
    sent_keys, digests = [], set()
    for server_round in (1, 2, 3):
        # Execute
        config = ConfigRecord()
        sent = list(
            strategy.configure_train(server_round, numpy_to_arrays(weights), config, FakeGrid([7, 8]))
        )
        arrays: ArrayRecord = sent[0].content["arrays"]
        sent_keys.append(sorted(arrays))
        digests.add(config[BASE_SHA_KEY])
        # the device's view: the message over the base is exactly w_t (in float32)
        merged = with_base({k: a.numpy() for k, a in arrays.items()}, config)
        for k in W0:
            np.testing.assert_array_equal(merged[k], np.asarray(weights[k], np.float32), err_msg=k)
        new, _ = strategy.aggregate_train(server_round, [_reply(sent[0], [1, 0]), _reply(sent[1], [0, 1])])
        weights = arrays_to_numpy(new)
    # Assert: w_0 goes by reference alone; afterwards only b2 (the array FedAdam moved); one base all along
    assert sent_keys == [[], ["b2"], ["b2"]]
    assert len(digests) == 1
    assert np.array_equal(weights["enc"], W0["enc"]) and not np.array_equal(weights["b2"], W0["b2"])
