"""HEFedAvg against PlainFedAvg on the same device replies (encrypted vs clear), with faults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict

from ckks.codec import HE_ARRAY_KEY, HE_STYPE, HECodec, flatten_update, pack_payload
from ckks.keys import PublicContext, SecretContext
from ckks.packing import EncryptedUpdate
from ckks.params import HEParams
from federation.wire import encode_stats
from server.key_authority_service import KeyAuthorityService
from server.strategies import DeltaFedAdam, PlainMean, QuantileClip, RoundSetup, make_strategy
from server.strategies.he_fedavg import HEFedAvg
from server.strategies.he_mean import HEMean
from server.strategies.plain_fedavg import PlainFedAvg, arrays_to_numpy, numpy_to_arrays
from tests.server.strategies.conftest import FakeGrid

TOL = 1e-5  # max |w_he - w_plain| per round (the target); fresh CKKS noise is ~6.3e-7 rms per value / sqrt(k)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyAuthorityService]:
    """One key authority process for the module (min_clients=2)."""
    with KeyAuthorityService(tmp_path_factory.mktemp("ka") / "audit.jsonl", min_clients=2) as service:
        yield service


def _w0() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "w1": rng.normal(0, 0.5, (6, 5)).astype(np.float32),
        "b1": rng.normal(0, 0.5, 6).astype(np.float32),
        "beta": np.array(1.0, np.float32),  # carried unchanged (no update touches it)
    }


def _round(strategy: PlainFedAvg, server_round: int, weights: dict, nodes: list[int]) -> list[Message]:
    config = ConfigRecord()
    return list(strategy.configure_train(server_round, numpy_to_arrays(weights), config, FakeGrid(nodes)))


def _reply(ins: Message, record: ArrayRecord, n: int) -> Message:
    return Message(RecordDict({"arrays": record}), reply_to=ins)  # a device sends nothing else


def _with_stats(delta: dict, n: int) -> dict:
    return {**delta, **encode_stats({"num-examples": n, "train-loss": 1.0, "example-epsilon": 0.5})}


def _he(ins: Message, delta: dict, n: int = 10) -> Message:
    """What a device with codec 'he' sends, built from the round config it received."""
    record = HECodec().encode(_with_stats(delta, n), config=ins.content["config"], num_examples=n)
    return _reply(ins, record, n)


def _plain(ins: Message, delta: dict, n: int = 10) -> Message:
    return _reply(ins, numpy_to_arrays(_with_stats(delta, n)), n)


def _error(ins: Message) -> Message:
    return Message(Error(code=0, reason="injected failure"), reply_to=ins)


def _delta(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w1": rng.normal(0, 0.1, (6, 5)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 6).astype(np.float32),
    }


def _foreign_params(delta: dict) -> ArrayRecord:
    """A well-formed payload encrypted under other CKKS parameters (a stale or misconfigured device)."""
    other = HEParams(name="other", poly_modulus_degree=4096, coeff_bit_sizes=(30, 60), scale_bits=25)
    public = SecretContext.generate(other).public_context()
    flat, layout = flatten_update(delta)
    payload = pack_payload(EncryptedUpdate.encrypt(public, flat), layout)
    return ArrayRecord(
        {HE_ARRAY_KEY: Array(dtype="float32", shape=(flat.size,), stype=HE_STYPE, data=payload)}
    )


def _truncated(record: ArrayRecord) -> ArrayRecord:
    array = record[HE_ARRAY_KEY]
    return ArrayRecord({HE_ARRAY_KEY: Array(array.dtype, array.shape, array.stype, array.data[:-100])})


@pytest.mark.parametrize("weighting", ["uniform", "examples"])
def test_matches_plain_fedavg_over_rounds_with_faults(authority: KeyAuthorityService, weighting: str) -> None:
    # Prepare: the same seeded strategies (so the same devices are sampled), momentum on
    # (the same w_t goes to both each round, so each round's CKKS noise is compared on its own)
    kwargs = dict(devices_per_round=8, server_lr=1.0, weighting=weighting, seed=3)
    he = HEFedAvg(key_authority=authority, **kwargs)
    plain = PlainFedAvg(**kwargs)
    rng = np.random.default_rng(1)
    w_he = w_plain = _w0()
    nodes = list(range(10, 20))
    for server_round in (1, 2, 3):
        sent_he = _round(he, server_round, w_plain, nodes)
        sent_plain = _round(plain, server_round, w_plain, nodes)
        assert [m.metadata.dst_node_id for m in sent_he] == [m.metadata.dst_node_id for m in sent_plain]
        deltas = [_delta(rng) for _ in sent_he]
        ns = [int(n) for n in rng.integers(5, 200, len(sent_he))]
        he_replies = [_he(m, d, n) for m, d, n in zip(sent_he, deltas, ns, strict=True)]
        plain_replies = [_plain(m, d, n) for m, d, n in zip(sent_plain, deltas, ns, strict=True)]
        if server_round == 2:  # device 0 fails, device 1 sends a truncated ciphertext, devices 6-7 are silent
            he_replies[0], plain_replies[0] = _error(sent_he[0]), _error(sent_plain[0])
            he_replies[1] = _reply(sent_he[1], _truncated(he_replies[1].content["arrays"]), ns[1])
            plain_replies[1] = _error(sent_plain[1])
            he_replies, plain_replies = he_replies[:6], plain_replies[:6]
        if server_round == 3:  # device 2 encrypted under other parameters
            he_replies[2] = _reply(sent_he[2], _foreign_params(deltas[2]), ns[2])
            plain_replies[2] = _error(sent_plain[2])
        # Execute
        arrays_he, metrics_he = he.aggregate_train(server_round, he_replies)
        arrays_plain, metrics_plain = plain.aggregate_train(server_round, plain_replies)
        # Assert: the same model and the same bookkeeping
        w_he, w_plain = arrays_to_numpy(arrays_he), arrays_to_numpy(arrays_plain)
        for key in w_plain:
            assert np.max(np.abs(w_he[key] - w_plain[key])) <= TOL, (server_round, key)
        assert metrics_he["participants"] == metrics_plain["participants"]
        assert metrics_he["dropouts"] == metrics_plain["dropouts"]
    reasons = " ".join(he.rounds[2]["failures"] + he.rounds[3]["failures"])
    assert "injected failure" in reasons and "no reply" in reasons
    assert reasons.count("malformed ciphertext") == 2 and "parameters" in reasons
    assert he.rounds[2]["participants"] == 4 and he.rounds[3]["participants"] == 7


def test_the_key_authority_audits_each_round(authority: KeyAuthorityService) -> None:
    he = HEFedAvg(key_authority=authority, devices_per_round=3)
    sent = _round(he, 41, _w0(), [1, 2, 3])
    rng = np.random.default_rng(2)
    he.aggregate_train(41, [_he(m, _delta(rng)) for m in sent])
    records = [json.loads(line) for line in Path(authority.audit_log).read_text().splitlines()]
    last = records[-1]
    assert last["round"] == 41 and last["verdict"] == "accepted" and last["declared_count"] == 3
    assert last["n_elements"] == 36 + 3 and last["declared_total_weight"] == 3.0  # 3 statistics slots


def test_below_min_clients_keeps_the_model(authority: KeyAuthorityService) -> None:
    # one usable update out of three: the authority refuses to decrypt a "sum" of one
    he = HEFedAvg(key_authority=authority, devices_per_round=3)
    sent = _round(he, 1, _w0(), [1, 2, 3])
    rng = np.random.default_rng(3)
    arrays, metrics = he.aggregate_train(1, [_he(sent[0], _delta(rng)), _error(sent[1])])
    assert arrays is None
    assert metrics["participants"] == 0 and metrics["dropouts"] == 3
    assert any("min_clients" in r for r in he.rounds[1]["failures"])


def test_ciphertext_under_another_key_spoils_only_that_round(authority: KeyAuthorityService) -> None:
    # Prepare: same parameters, different key pair: it parses, so only the decrypted slots can catch it
    he = HEFedAvg(key_authority=authority, devices_per_round=3)
    sent = _round(he, 1, _w0(), [1, 2, 3])
    rng = np.random.default_rng(4)
    rogue = SecretContext.generate(he.public_context.params).public_context()
    rogue_config = {**dict(sent[2].content["config"]), "he-public-context": rogue.to_bytes()}
    del rogue_config["he-public-context-sha256"]
    replies = [_he(sent[0], _delta(rng)), _he(sent[1], _delta(rng))]
    replies.append(_reply(sent[2], HECodec().encode(_with_stats(_delta(rng), 10), config=rogue_config), 10))
    # Execute
    arrays, metrics = he.aggregate_train(1, replies)
    # Assert: refused (count slot), model kept, no crash; the next round works again
    assert arrays is None and metrics["participants"] == 0
    # a foreign-key ciphertext decrypts to garbage of modest size: the count slot catches it, and in
    # the ~1% of keys where that garbage lands near the declared count, the weight slot does
    assert any("count slot" in r or "weight slot" in r for r in he.rounds[1]["failures"])
    sent = _round(he, 2, _w0(), [1, 2, 3])
    arrays, metrics = he.aggregate_train(2, [_he(m, _delta(rng)) for m in sent])
    assert arrays is not None and metrics["participants"] == 3


def test_plain_replies_are_dropouts_and_devices_never_get_a_secret(authority: KeyAuthorityService) -> None:
    he = HEFedAvg(key_authority=authority, devices_per_round=3)
    sent = _round(he, 1, _w0(), [1, 2, 3])
    rng = np.random.default_rng(5)
    replies = [_he(sent[0], _delta(rng)), _he(sent[1], _delta(rng)), _plain(sent[2], _delta(rng))]
    arrays, metrics = he.aggregate_train(1, replies)
    assert arrays is not None and metrics["participants"] == 2 and metrics["dropouts"] == 1
    assert "codec 'he'" in " ".join(he.rounds[1]["failures"])
    config = sent[0].content["config"]
    assert config["codec"] == "he"
    PublicContext.from_bytes(config["he-public-context"])  # refuses anything holding a secret key
    with pytest.raises(ValueError, match="public"):
        HECodec().encode(
            _delta(rng),
            config={"he-public-context": SecretContext.generate(he.public_context.params).to_bytes()},
        )


def test_make_strategy_builds_he(authority: KeyAuthorityService) -> None:
    setup = RoundSetup(mean_update=HEMean(key_authority=authority, devices_per_round=2), devices_per_round=2)
    assert isinstance(make_strategy("fedadam", setup, server_lr=0.01), DeltaFedAdam)
    with pytest.raises(ValueError, match="he_weight_unit"):
        HEFedAvg(key_authority=authority, devices_per_round=2, he_weight_unit=0.0)
    # More unit-weight devices a round than the preset's count + weight slots provably hold is refused
    capacity = int(authority_params(authority).max_count_plus_weight)
    HEFedAvg(key_authority=authority, devices_per_round=capacity // 2)
    with pytest.raises(ValueError, match="reserved slots"):
        HEFedAvg(key_authority=authority, devices_per_round=capacity // 2 + 1)


def authority_params(authority: KeyAuthorityService) -> HEParams:
    """The CKKS preset the authority's federation key uses."""
    return PublicContext.from_bytes(authority.public_context_bytes()).params


def test_fedadam_with_adaptive_clipping_matches_plain_under_he(authority: KeyAuthorityService) -> None:
    # Prepare: FedAdam over HE and over plain means; the clip bit travels inside each update
    def strategy(mean) -> DeltaFedAdam:
        setup = RoundSetup(mean_update=mean, devices_per_round=4, clip=QuantileClip(1.0), seed=5)
        return make_strategy("fedadam", setup, server_lr=0.05, server_momentum=0.9)

    he = strategy(HEMean(key_authority=authority, devices_per_round=4))
    plain = strategy(PlainMean())
    rng = np.random.default_rng(2)
    w = _w0()
    for server_round in (1, 2):
        sent_he, sent_plain = (
            _round(he, server_round, w, list(range(6))),
            _round(plain, server_round, w, list(range(6))),
        )
        assert sent_he[0].content["config"]["clip-bit"] is True
        deltas = [{**_delta(rng), "clip-bit": np.array([float(i % 2)], np.float32)} for i in range(4)]
        # Execute
        arrays_he, _ = he.aggregate_train(
            server_round, [_he(m, d) for m, d in zip(sent_he, deltas, strict=True)]
        )
        arrays_plain, _ = plain.aggregate_train(
            server_round, [_plain(m, d) for m, d in zip(sent_plain, deltas, strict=True)]
        )
        # Assert: the same step, the bit's mean (1/2) seen, C_t unchanged at gamma = 1/2, bit never a weight
        w_he, w_plain = arrays_to_numpy(arrays_he), arrays_to_numpy(arrays_plain)
        assert set(w_he) == set(_w0())
        for key in w_plain:
            assert np.max(np.abs(w_he[key] - w_plain[key])) <= 1e-4, key
        assert abs(he.rounds[server_round]["unclipped_fraction"] - 0.5) < 1e-5
        assert abs(he.clip - 1.0) < 1e-4
        w = w_plain
