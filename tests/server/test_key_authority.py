"""KeyAuthority: hands out public bytes only, refuses small or miscounted aggregates, audits everything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckks.keys import PublicContext, assert_public_only
from ckks.packing import EncryptedUpdate, sum_updates
from server.key_authority import AggregateRefused, KeyAuthority

TOL_MEAN = 3e-5


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority(tmp_path_factory.mktemp("ka") / "audit.jsonl", min_clients=3)


@pytest.fixture(scope="module")
def public(authority: KeyAuthority) -> PublicContext:
    return PublicContext.from_bytes(authority.public_context_bytes())


def _encrypted_sum(public: PublicContext, k: int, size: int = 500) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(k)
    xs = rng.normal(0, 0.1, (k, size))
    ws = rng.uniform(0.5, 1.5, k)
    total = sum_updates(
        EncryptedUpdate.encrypt(public, x, weight=float(w)) for x, w in zip(xs, ws, strict=True)
    )
    return total.to_bytes(), ws @ xs / ws.sum()


def _audit(authority: KeyAuthority) -> list[dict]:
    return [json.loads(line) for line in authority.audit_log.read_text().splitlines()]


def test_hands_out_public_context_only(authority: KeyAuthority) -> None:
    assert_public_only(authority.public_context_bytes())


def test_accepts_and_logs(authority: KeyAuthority, public: PublicContext) -> None:
    blob, expected = _encrypted_sum(public, 4)
    result = authority.decrypt_aggregate(blob, 4, server_round=7)
    assert np.max(np.abs(result.mean - expected)) < TOL_MEAN
    assert round(result.count) == 4
    last = _audit(authority)[-1]
    assert last["verdict"] == "accepted" and last["round"] == 7
    assert last["declared_count"] == 4 and round(last["decoded_count"]) == 4 and last["n_elements"] == 500
    assert {"time", "reason", "decoded_total_weight"} <= last.keys()


def test_refuses_below_min_clients(authority: KeyAuthority, public: PublicContext) -> None:
    blob, _ = _encrypted_sum(public, 2)
    with pytest.raises(AggregateRefused, match="min_clients=3"):
        authority.decrypt_aggregate(blob, 2, server_round=1)
    last = _audit(authority)[-1]
    assert last["verdict"] == "refused" and last["declared_count"] == 2 and last["decoded_count"] is None


def test_refuses_count_mismatch(authority: KeyAuthority, public: PublicContext) -> None:
    """An aggregator that declares 5 but sends the sum of 3 (e.g. to isolate updates) is refused."""
    blob, _ = _encrypted_sum(public, 3)
    with pytest.raises(AggregateRefused, match="count slot decodes to 3.000"):
        authority.decrypt_aggregate(blob, 5, server_round=2)
    last = _audit(authority)[-1]
    assert (
        last["verdict"] == "refused" and round(last["decoded_count"]) == 3 and "count slot" in last["reason"]
    )


def test_single_update_cannot_pass_as_aggregate(authority: KeyAuthority, public: PublicContext) -> None:
    blob = EncryptedUpdate.encrypt(public, np.ones(10)).to_bytes()
    with pytest.raises(AggregateRefused, match="decodes to 1.000"):
        authority.decrypt_aggregate(blob, 3)


def test_checks_declared_weight(authority: KeyAuthority, public: PublicContext) -> None:
    blob, _ = _encrypted_sum(public, 3)
    with pytest.raises(AggregateRefused, match="weight slot"):
        authority.decrypt_aggregate(blob, 3, declared_total_weight=100.0)


def test_refuses_malformed_bytes(authority: KeyAuthority) -> None:
    with pytest.raises(AggregateRefused, match="malformed"):
        authority.decrypt_aggregate(b"garbage" * 10, 5)
    assert _audit(authority)[-1]["verdict"] == "refused"


def test_save_load_survives_restart(authority: KeyAuthority, public: PublicContext, tmp_path: Path) -> None:
    key = tmp_path / "federation.key"
    authority.save(key)
    assert key.stat().st_mode & 0o777 == 0o600
    restarted = KeyAuthority.load(key, tmp_path / "audit2.jsonl", min_clients=3)
    assert restarted.public_context_bytes() == authority.public_context_bytes()
    blob, expected = _encrypted_sum(public, 3)
    assert np.max(np.abs(restarted.decrypt_aggregate(blob, 3).mean - expected)) < TOL_MEAN


def test_constructor_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_clients"):
        KeyAuthority(tmp_path / "a.jsonl", min_clients=0)
    with pytest.raises(TypeError, match="SecretContext"):
        KeyAuthority(tmp_path / "a.jsonl", secret="not a key")  # type: ignore[arg-type]
