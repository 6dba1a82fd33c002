"""Micro-benchmark: homomorphic vs plaintext aggregation of K device updates, in one process.

Measures, for the ``ckks.params.AGGREGATION`` preset: bytes on the wire per parameter (vs 4 for fp32),
the per-client encryption time (encrypt + serialize), the aggregator's HE sum of K updates (parsing
excluded, reported apart), the plaintext numpy weighted sum of the same K fp32 updates, and the max
error of the decrypted weighted mean against numpy's (float64).

    python -m hushtype.bench_aggregate_micro --clients 20 --params 1330000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ckks.keys import PublicContext, SecretContext
from ckks.packing import EncryptedUpdate
from ckks.params import AGGREGATION, HEParams


def measure_aggregation(
    clients: int = 20, params: int = 1_330_000, seed: int = 0, he_params: HEParams = AGGREGATION
) -> dict[str, object]:
    """Run K clients' updates (N(0, 0.1²), weights in [0.5, 1.5]) through HE and numpy; return timings."""
    rng = np.random.default_rng(seed)
    secret = SecretContext.generate(he_params)
    public = PublicContext.from_bytes(secret.public.to_bytes())  # what devices and the aggregator load
    updates = rng.normal(0.0, 0.1, size=(clients, params)).astype(np.float32)
    weights = rng.uniform(0.5, 1.5, size=clients)

    blobs = []
    t0 = time.perf_counter()
    for x, w in zip(updates, weights, strict=True):
        blobs.append(EncryptedUpdate.encrypt(public, x, weight=float(w)).to_bytes())
    client_encrypt_s = (time.perf_counter() - t0) / clients

    # Aggregator: parse each arriving blob, add it into the running sum (streaming, O(1) updates in memory).
    parse_s = add_s = 0.0
    total = None
    for blob in blobs:
        t0 = time.perf_counter()
        update = EncryptedUpdate.from_bytes(public, blob)
        t1 = time.perf_counter()
        total = update if total is None else total.add_(update)
        add_s += time.perf_counter() - t1
        parse_s += t1 - t0
    assert total is not None
    sum_bytes = total.to_bytes()

    t0 = time.perf_counter()
    plain_mean = np.tensordot(weights.astype(np.float32), updates, axes=1) / np.float32(weights.sum())
    plain_aggregate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    decrypted = EncryptedUpdate.from_bytes(public, sum_bytes).decrypt(secret)
    decrypt_s = time.perf_counter() - t0
    reference = (weights @ updates.astype(np.float64)) / weights.sum()
    max_abs_error = float(np.max(np.abs(decrypted.mean() - reference)))
    del plain_mean

    bytes_per_param = len(blobs[0]) / params
    return {
        "he_params": he_params.to_dict(),
        "clients": clients,
        "params": params,
        "ciphertexts_per_update": len(total.chunks),
        "bytes_per_update": len(blobs[0]),
        "bytes_per_param": bytes_per_param,
        "expansion_vs_fp32": bytes_per_param / 4.0,
        "client_encrypt_s": client_encrypt_s,
        "server_parse_s": parse_s,
        "server_aggregate_s": add_s,
        "plain_aggregate_s": plain_aggregate_s,
        "ratio_vs_plain": add_s / plain_aggregate_s,
        "key_authority_decrypt_s": decrypt_s,
        "max_abs_error": max_abs_error,
        "decoded_count": decrypted.count,
        "public_context_bytes": len(secret.public.to_bytes()),
        "secret_context_bytes": len(secret.to_bytes()),
    }


def main() -> None:
    """CLI: print the measurement as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--params", type=int, default=1_330_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(measure_aggregation(args.clients, args.params, args.seed), indent=2))


if __name__ == "__main__":
    main()
