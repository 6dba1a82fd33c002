"""KeyAuthorityService: a separate process that decrypts aggregates only, over a pickle-free protocol."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ckks.keys import PublicContext, SecretContext, assert_public_only
from ckks.packing import EncryptedUpdate, sum_updates
from server.key_authority import AggregateRefused
from server.key_authority_service import KeyAuthorityService, KeyAuthorityUnavailable


def test_decrypts_aggregates_refuses_singles_and_persists_its_key(tmp_path: Path) -> None:
    # Prepare: an authority that keeps its key in a 0600 file, so a restart serves the same federation
    key_path = tmp_path / "ka" / "secret.bin"
    key_path.parent.mkdir()
    service = KeyAuthorityService(
        tmp_path / "audit.jsonl", min_clients=2, key_path=key_path, public_context_path=tmp_path / "pc.bin"
    )
    try:
        assert service.pid != os.getpid()
        public = PublicContext.from_bytes(service.public_context_bytes())
        assert (tmp_path / "pc.bin").read_bytes() == service.public_context_bytes()
        xs = np.random.default_rng(0).normal(0, 0.1, (3, 300))
        total = sum_updates(EncryptedUpdate.encrypt(public, x) for x in xs)
        # Execute / Assert: a sum of 3 decrypts to the mean; a "sum" of one is refused
        result = service.decrypt_aggregate(total.to_bytes(), 3, server_round=1, declared_total_weight=3.0)
        assert np.max(np.abs(result.mean - xs.mean(axis=0))) < 1e-5 and round(result.count) == 3
        with pytest.raises(AggregateRefused, match="min_clients"):
            service.decrypt_aggregate(EncryptedUpdate.encrypt(public, xs[0]).to_bytes(), 1)
        with pytest.raises(AggregateRefused, match="malformed"):
            service.decrypt_aggregate(b"garbage", 3)
    finally:
        service.close()
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    assert SecretContext.load(key_path).has_secret_key  # only the authority's file holds it
    with pytest.raises(KeyAuthorityUnavailable):
        service.decrypt_aggregate(b"x", 3)
    restarted = KeyAuthorityService(tmp_path / "audit.jsonl", key_path=key_path)
    try:
        assert restarted.public_context_bytes() == public.to_bytes()
        assert_public_only(restarted.public_context_bytes())
    finally:
        restarted.close()
