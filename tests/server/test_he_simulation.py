"""Homomorphic aggregation end to end: the aggregator holds no secret key, and a real Flower run with
aggregation="he" lands on the same model as aggregation="plain"."""

from __future__ import annotations

import gc
import json
import os
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tenseal.sealapi as sealapi
from safetensors.numpy import load_file

from ckks.keys import SecretContext, assert_public_only
from hushtype.simulation import FederationConfig, run_federated
from keyboard_sim.dataset import save_jsonl
from server.key_authority import KeyAuthority
from server.key_authority_service import KeyAuthorityService
from server.server_app import build_strategy, calibrate_noise
from tests.conftest import make_users

# Each device's fresh encryption adds ~6.3e-7 rms per value (measured, AGGREGATION preset; heavy tails: max
# ~6.7e-6 over 1.33M values), so the mean of k=3 updates over 2 rounds holds the 1e-5 target outright.
TOL_RMS = 2e-6
TOL_MAX = 1e-5
_SECRET_TYPES = (SecretContext, KeyAuthority, sealapi.SecretKey, sealapi.Decryptor, sealapi.KeyGenerator)


_CODE_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)


def _reachable(*roots: object) -> Iterator[object]:
    """Every object reachable from ``roots`` through references Python can see (gc.get_referents)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _CODE_TYPES):  # code leads to whole modules: not state
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(gc.get_referents(obj))


def test_aggregator_holds_no_secret_key(tmp_path: Path) -> None:
    # Prepare: what the aggregator process holds in an HE run: the key-authority handle and the strategy
    service = KeyAuthorityService(tmp_path / "audit.jsonl", min_clients=2)
    try:
        config = FederationConfig(devices=4, devices_per_round=2, aggregation="he")
        strategy = build_strategy(config, calibrate_noise(config), service)  # as run_federation builds it
        mean_update = strategy.rounds_setup.mean_update
        # Execute: walk everything the strategy (and the handle it keeps) can reach
        objects = list(_reachable(strategy, service))
        # Assert: the key lives in another process, and nothing reachable here is or wraps a secret key
        assert service.pid != os.getpid() and service._process.poll() is None
        assert not [type(o).__name__ for o in objects if isinstance(o, _SECRET_TYPES)]
        contexts = [o for o in objects if isinstance(o, bytes) and len(o) > 4 and o.startswith(b"HTCX")]
        assert contexts and all(assert_public_only(blob) for blob in contexts)
        assert_public_only(mean_update.public_context_bytes)
        assert not mean_update.public_context.has_secret_key
    finally:
        service.close()
    assert service._process.poll() is not None  # the secret key died with the process


def _config(tmp_path: Path, aggregation: str, corpus: Path) -> FederationConfig:
    return FederationConfig(
        devices=4,
        devices_per_round=4,  # every device every round: the HE and plain runs see identical rounds
        rounds=2,
        aggregation=aggregation,
        data_source="jsonl",
        jsonl_path=str(corpus),
        vocab_size=64,
        embed_dim=8,
        hidden=16,
        min_device_examples=4,
        max_local_steps=2,
        batch_size=8,
        trainable="b1,w2,b2",
        noise_multiplier=1.0,
        fail_partitions=(0,),
        run_dir=str(tmp_path / aggregation),
        eval_max_examples=200,
        seed=1,
    )


def test_he_federation_matches_plain(tmp_path: Path) -> None:
    # Prepare: one corpus, two runs that differ only in aggregation (device 0 always fails)
    corpus = tmp_path / "corpus.jsonl"
    save_jsonl(make_users(n_users=30, lines_per_user=20), corpus)
    he_cfg, plain_cfg = _config(tmp_path, "he", corpus), _config(tmp_path, "plain", corpus)
    # Execute
    he_card = run_federated(he_cfg)
    plain_card = run_federated(plain_cfg)
    # Assert: same participants, same final model within CKKS precision
    assert he_card["participants"] == plain_card["participants"] == 6  # 3 per round
    assert he_card["dropouts"] == plain_card["dropouts"] == 2  # device 0, both rounds
    final = "checkpoints/round_002.safetensors"
    w_he, w_plain = load_file(str(tmp_path / "he" / final)), load_file(str(tmp_path / "plain" / final))
    assert w_he.keys() == w_plain.keys()
    w_0 = load_file(str(tmp_path / "he" / "checkpoints" / "round_000.safetensors"))
    assert max(float(np.max(np.abs(w_he[k] - w_0[k]))) for k in w_he) > 1e-3  # the model did move
    diff = np.concatenate([(w_he[k].astype(np.float64) - w_plain[k]).ravel() for k in w_he])
    assert float(np.sqrt(np.mean(diff**2))) <= TOL_RMS and float(np.max(np.abs(diff))) <= TOL_MAX
    # the key authority ran beside the aggregator: public context on disk, every round audited
    ka = tmp_path / "he" / "key_authority"
    assert_public_only((ka / "public_context.bin").read_bytes())
    audit = [json.loads(line) for line in (ka / "audit.jsonl").read_text().splitlines()]
    assert [r["round"] for r in audit] == [1, 2] and all(r["verdict"] == "accepted" for r in audit)
    # nothing the run wrote holds a secret key
    for path in (tmp_path / "he").rglob("*"):
        if path.is_file() and path.read_bytes()[:4] == b"HTCX":
            assert_public_only(path.read_bytes())
    assert not (tmp_path / "plain" / "key_authority").exists()
