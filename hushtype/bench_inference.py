"""``hushtype bench inference``: encrypted vs plaintext next-word inference on a real release.

Runs ``hushtype.bench_inference_micro.measure_inference`` (server-side circuit latency, TenSEAL's
own ``CKKSVector.mm`` on the same W2 layer, bytes on the wire, top-3 agreement) on the released
weights, and measures what personalization buys: a vocabulary bias fitted on each held-out
user's earlier lines, scored on their later lines (``personalization_top3_lift``, with its
standard error and the share of users it helps). Prints one JSON object.
"""

from __future__ import annotations

import time

import numpy as np

from hushtype.bench_inference_micro import measure_encoder_model, measure_inference
from keyboard_sim.dataset import DataConfig, build_federated_data, release_data_config
from keyboard_sim.personalize import PersonalizationConfig, fit_vocab_bias, topk_accuracy_with_bias
from models.factory import build_model, load_weights
from models.release import load_release

__all__ = ["personalization_lift", "run_inference_bench"]


def personalization_lift(
    release_dir: str, data_config: DataConfig | None = None, *, min_examples: int = 20, min_later: int = 10
) -> dict:
    """Top-3 on held-out users' later lines with vs without their own fitted vocabulary bias."""
    release = load_release(release_dir)
    model = load_weights(build_model(release.config), release.weights).eval()
    # the release's own window length (an encoder model reads more words than the CLI's default 4)
    data = build_federated_data(release_data_config(release, data_config))
    if data.vocab.words != release.vocab.words:
        raise ValueError("the release was built with another vocabulary than this data configuration")
    config = PersonalizationConfig()
    lifts = []
    for user in data.heldout_users:
        if len(user.train) < min_examples or len(user.later) < min_later:
            continue
        bias = fit_vocab_bias(model, user.train, config)
        base = topk_accuracy_with_bias(model, user.later, None)
        personal = topk_accuracy_with_bias(model, user.later, bias)
        if not np.isnan(base):
            lifts.append(personal - base)
    arr = np.asarray(lifts)
    return {
        "personalization_top3_lift": float(arr.mean()) if len(arr) else 0.0,
        "personalization_top3_lift_stderr": float(arr.std(ddof=1) / np.sqrt(len(arr)))
        if len(arr) > 1
        else 0.0,
        "personalization_users": int(len(arr)),
        "personalization_users_helped": float((arr > 0).mean()) if len(arr) else 0.0,
        "personalization_l2": config.l2,
    }


def run_inference_bench(
    release_dir: str,
    *,
    queries: int = 20,
    data_config: DataConfig | None = None,
    personalization: bool = True,
    mode: str = "h",
) -> dict:
    """The inference benchmark on ``release_dir``: one JSON-ready dict.

    Both circuit modes are measured in the same run; the top-level fields are those of ``mode``
    (what ``hushtype serve`` runs by default), the other mode's sit under ``x_mode`` / ``h_mode``.
    """
    if mode not in ("x", "h"):
        raise ValueError(f"mode must be 'x' or 'h', got {mode!r}")
    start = time.perf_counter()
    release = load_release(release_dir)
    result = {"release": release_dir, "model_version": release.version}
    if release.config.kind != "nplm":  # an encoder model: mode "h" only, beside today's NPLM head
        if mode != "h":
            raise ValueError(f"a {release.config.kind} release is served in mode 'h' only, got mode {mode!r}")
        micro = measure_encoder_model(dict(release.weights), release.config, queries=queries)
    else:
        micro = measure_inference(dict(release.weights), queries=queries)
    if mode == "h" and "h_mode" in micro:
        h_fields = micro.pop("h_mode")
        micro["x_mode"] = {k: micro.pop(k) for k in list(h_fields) if k in micro}
        micro.update(h_fields)
        micro["mode"] = "h (device computes W1 x + b1 on the public weights and encrypts h; server depth 2)"
    result.update(micro)
    if personalization:
        result.update(personalization_lift(release_dir, data_config))
    result["seconds"] = time.perf_counter() - start
    return result
