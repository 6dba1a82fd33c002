"""Encrypted inference micro-benchmark: one query through ``EncryptedNPLM`` vs plaintext vs TenSEAL ``mm``.

Measures, in one process and side by side (the machine is shared: compare ratios, not absolute times):

- ``encrypted_p50_ms``/``p95``: server ``EncryptedNPLM.evaluate`` only (mode "x": encrypted context,
  depth 3); ``client_encrypt_ms``/``client_decrypt_ms``: the device's work for one query.
- ``plaintext_p50_ms``: numpy ``models.nplm.server_logits`` on the same inputs.
- ``tenseal_mm_p50_ms`` vs ``w2_layer_p50_ms``: the W2 layer (a (H,) -> z (V,), the expensive one) with
  TenSEAL's ``CKKSVector.mm`` (default context [60, 40, 40, 60], default Galois keys) and with our
  ``ReplicatedMatVec`` on the same weights; ``speedup_vs_tenseal_mm`` is their ratio (like with like).
- bytes: seeded query, response (logits at the last level), seeded evaluation keys.
- ``top3_agreement``: the decrypted top-3 set equals the plaintext top-3 set.
- ``h_mode``: the same numbers for the fallback where the device computes h = W1 x + b1 (depth 2).

With a ``config`` of an encoder model (kind "mlp"/"lstm"), only mode "h" exists: the device's h comes
from ``models.factory.encode`` and the reference is ``models.head.head_logits``; the NPLM head of today's
shape (``default_weights``) is measured in the same run as ``previous_head_*``, so the encrypted cost of
the new head is reported as a same-run ratio (``encrypted_ratio_to_previous_head``).

Default weights: ``NPLM(ModelConfig())`` at init, embeddings/W1/W2 scaled x3 so logits spread like a trained
model's (std ~0.9; the raw init has std 0.025). Run: ``python -m hushtype.bench_inference_micro``.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ckks.nplm_circuit import EncryptedNPLM
from ckks.session_keys import (
    KIND_BIAS,
    KIND_LOGITS,
    KIND_QUERY,
    SessionSecret,
    dump_ciphertext,
)
from ckks.session_keys import load_ciphertext as load_ct
from models.config import ModelConfig
from models.factory import encode
from models.head import head_logits
from models.nplm import client_features, server_logits


def default_weights(seed: int = 0, gain: float = 3.0) -> dict[str, np.ndarray]:
    """Default-size NPLM weights at init, scaled by ``gain`` so logits spread like a trained model's."""
    import torch

    from models.nplm import NPLM, ModelConfig, export_weights

    torch.manual_seed(seed)
    weights = export_weights(NPLM(ModelConfig()))
    for key in ("embedding", "w1", "w2"):
        weights[key] = weights[key] * np.float32(gain)
    return weights


def _ms(values: list[float], q: float = 50) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def _measure_mode(weights: dict, mode: str, contexts: np.ndarray, config: ModelConfig | None = None) -> dict:
    """Build the circuit + a session and run every context through the encrypted path."""
    if config is not None and config.kind != "nplm":
        return _measure_encoder_model(weights, config, contexts)
    xs = [client_features(weights, ids) for ids in contexts]
    # Device-side h (mode "h") and all numpy references are computed outside the timed loop: OpenBLAS
    # threads keep spinning after a matmul and would steal the 2 cores from the HE evaluation (measured 2x).
    t = time.perf_counter()
    feats = xs if mode == "x" else [x @ weights["w1"].T.astype(np.float64) + weights["b1"] for x in xs]
    feature_ms = (time.perf_counter() - t) * 1e3 / len(xs)
    return _run_circuit(weights, mode, feats, [server_logits(weights, x) for x in xs], feature_ms)


def _measure_encoder_model(weights: dict, config: ModelConfig, contexts: np.ndarray) -> dict:
    """Mode "h" for an encoder model: h from the device's encoder, the head's numpy reference."""
    t = time.perf_counter()
    feats = list(encode(config, weights, contexts))
    feature_ms = (time.perf_counter() - t) * 1e3 / len(contexts)
    return _run_circuit(weights, "h", feats, [head_logits(weights, h) for h in feats], feature_ms)


def _run_circuit(weights: dict, mode: str, feats: list, wants: list, feature_ms: float) -> dict:
    t0 = time.perf_counter()
    circuit = EncryptedNPLM(weights, mode=mode)
    build_s = time.perf_counter() - t0
    session = SessionSecret.generate(circuit.params, circuit.rotation_steps, circuit.rotation_level)
    key_bytes = session.eval_keys_bytes()
    keys = circuit.load_eval_keys(key_bytes)
    enc_t, dec_t, eval_t, got = [], [], [], []
    query = response = b""
    time.sleep(0.05)
    for features in feats:
        t = time.perf_counter()
        query = session.encrypt_query(circuit.query_slots(features))
        enc_t.append(time.perf_counter() - t)
        query_ct = load_ct(query, circuit.context, circuit.params, KIND_QUERY, key_id=keys.key_id)
        t = time.perf_counter()
        z = circuit.evaluate(query_ct, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
        eval_t.append(time.perf_counter() - t)
        response = dump_ciphertext(z, circuit.params, keys.key_id, KIND_LOGITS)
        t = time.perf_counter()
        got.append(session.decrypt_logits(response, circuit.vocab_size))
        dec_t.append(time.perf_counter() - t)
    errors, agree = [], []
    for want, logits in zip(wants, got, strict=True):
        errors.append(float(np.max(np.abs(logits - want))))
        agree.append(set(np.argsort(-logits)[:3]) == set(np.argsort(-want)[:3]))
    return {
        "params": circuit.params.to_dict(),
        "rotation_steps": circuit.rotation_steps,
        "encrypted_p50_ms": _ms(eval_t),
        "encrypted_p95_ms": _ms(eval_t, 95),
        "client_encrypt_ms": _ms(enc_t),
        "client_features_ms": feature_ms,  # mode "h": the device's plaintext encoder (NPLM: W1 x + b1)
        "client_decrypt_ms": _ms(dec_t),
        "query_bytes": len(query),
        "response_bytes": len(response),
        "eval_key_bytes": len(key_bytes),
        "top3_agreement": float(np.mean(agree)),
        "max_abs_logit_error": float(np.max(errors)),
        "circuit_build_s": build_s,
        "_circuit": circuit,
        "_session": session,
        "_keys": keys,
    }


def _w2_layer_times(weights: dict, run: dict, reps: int) -> list[float]:
    """Our ReplicatedMatVec on the W2 layer alone (input at the activation's level and scale)."""
    circuit, session, keys = run["_circuit"], run["_session"], run["_keys"]
    layer = circuit.layer2
    a = np.random.default_rng(0).normal(size=circuit.hidden)
    slots = circuit.tools.slots
    scale = circuit.output_scale  # the activation's output scale = the layer's input scale
    blob = session.encrypt_bias(np.tile(a, slots // a.size), scale, layer.parms_id)
    a_ct = load_ct(blob, circuit.tail_context, circuit.params, KIND_BIAS)
    from ckks.matvec import HETools

    tail = circuit.tail_tools
    tools = HETools(circuit.tail_context, tail.encoder, tail.evaluator, keys.galois_keys, keys.relin_keys)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        layer.apply(a_ct, tools)
        times.append(time.perf_counter() - t)
    return times


def _tenseal_mm_times(weights: dict, reps: int) -> tuple[list[float], float]:
    """TenSEAL's CKKSVector.mm on the W2 layer: enc(a) (H,) @ W2.T (H, V); returns times and max error."""
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    w2t = weights["w2"].astype(np.float64).T  # (H, V)
    a = np.random.default_rng(0).normal(size=w2t.shape[0])
    vec = ts.ckks_vector(ctx, a.tolist())
    times, err = [], 0.0
    for _ in range(reps):
        t = time.perf_counter()
        out = vec.mm(w2t.tolist())
        times.append(time.perf_counter() - t)
        err = float(np.max(np.abs(np.asarray(out.decrypt()) - a @ w2t)))
    return times, err


def measure_encoder_model(weights: dict, config: ModelConfig, queries: int = 20, seed: int = 0) -> dict:
    """Mode "h" on an encoder model's release, beside today's NPLM head (same shape) in the same run."""
    contexts = np.random.default_rng(seed).integers(0, config.vocab_size, size=(queries, config.context))
    run = _measure_mode(weights, "h", contexts, config)
    hs = encode(config, weights, contexts)
    plain_t = []
    for h in hs:
        t = time.perf_counter()
        head_logits(weights, h)
        plain_t.append(time.perf_counter() - t)
    time.sleep(0.05)  # let BLAS threads go idle before timing HE again
    previous = default_weights(seed)
    old = _measure_mode(previous, "h", contexts[:, -4:] % previous["w2"].shape[0])
    return {
        "benchmark": "inference_micro",
        "vocab_size": int(config.vocab_size),
        "hidden": int(config.hidden),
        "queries": queries,
        "mode": "h (device runs the public encoder and encrypts h; server runs the head, depth 2)",
        **{k: v for k, v in run.items() if not k.startswith("_")},
        "plaintext_p50_ms": _ms(plain_t),
        "previous_head_encrypted_p50_ms": old["encrypted_p50_ms"],
        "encrypted_ratio_to_previous_head": run["encrypted_p50_ms"] / old["encrypted_p50_ms"],
    }


def measure_inference(
    weights: dict | None = None, queries: int = 20, seed: int = 0, mm_reps: int = 3
) -> dict:
    """Run the benchmark; returns the JSON-able dict described in the module docstring."""
    weights = weights if weights is not None else default_weights(seed)
    vocab, context_len = weights["w2"].shape[0], weights["w1"].shape[1] // weights["embedding"].shape[1]
    contexts = np.random.default_rng(seed).integers(0, vocab, size=(queries, context_len))
    x_run = _measure_mode(weights, "x", contexts)
    h_run = _measure_mode(weights, "h", contexts)
    plain_t = []
    for ids in contexts:
        x = client_features(weights, ids)
        t = time.perf_counter()
        server_logits(weights, x)
        plain_t.append(time.perf_counter() - t)
    time.sleep(0.05)  # let BLAS threads go idle before timing HE again
    w2_times = _w2_layer_times(weights, x_run, max(mm_reps, 5))
    mm_times, mm_err = _tenseal_mm_times(weights, mm_reps)
    public = {k: v for k, v in x_run.items() if not k.startswith("_")}
    return {
        "benchmark": "inference_micro",
        "vocab_size": int(vocab),
        "hidden": int(weights["w1"].shape[0]),
        "input_dim": int(weights["w1"].shape[1]),
        "queries": queries,
        "mode": "x (device encrypts its context features, server depth 3)",
        **public,
        "plaintext_p50_ms": _ms(plain_t),
        "w2_layer_p50_ms": _ms(w2_times),
        "tenseal_mm_p50_ms": _ms(mm_times),
        "tenseal_mm_max_abs_error": mm_err,
        "speedup_vs_tenseal_mm": _ms(mm_times) / _ms(w2_times),
        "speedup_layer": "W2 (V x H) matvec, one encrypted vector: ReplicatedMatVec vs CKKSVector.mm",
        "h_mode": {k: v for k, v in h_run.items() if not k.startswith("_")},
    }


def main() -> None:
    """Print the benchmark JSON."""
    print(json.dumps(measure_inference(), indent=2))


if __name__ == "__main__":
    main()
