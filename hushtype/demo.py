"""``hushtype demo``: the whole product on the embedded default corpus, end to end.

1. Baselines: corpus -> public vocabulary -> Kneser-Ney trigram, the central shipped model (LSTM)
   and NPLM (no DP), scored on held-out users (``hushtype bench quality --quick``).
2. Warm start: the NPLM trained on the public plays only (no private text, no privacy cost).
3. Federated training: simulated phones fine-tune with DP-SGD (Opacus) under Flower; their updates
   are CKKS-encrypted, summed by the aggregator, and only the sum is decrypted by the key authority.
   Beside it, the same devices without any privacy (the bench's no-DP arm, one pass over their windows),
   so a reader sees what federated training learns and what user-level DP at epsilon 8 costs.
4. Serving: the user adapter's settings are chosen on train users and recorded in the release's card
   (``hushtype.adapter_settings``); the DP release is served by the FastAPI service (real HTTP,
   worker processes).
5. Querying: a held-out user's phone creates a user key, uploads the statistics of its earlier lines
   encrypted under it (an increment the server adds under HE) and derives the user's adapter, then
   types a sentence and sends it (``sentence_sent``: the adapter kept up to date); a second device
   with only the exported user key gets suggestions the server computed on ciphertexts, personalized
   at once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from federation import FederationConfig
from hushtype.bench_quality import QualityConfig, run_quality
from hushtype.pretrain import pretrain_public
from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy
from keyboard_sim.corpus import load_users
from keyboard_sim.dataset import DataConfig
from keyboard_sim.split import local_split, split_users

__all__ = ["run_demo", "DEMO_PROMPTS"]

DEMO_PROMPTS = ["to be or not to", "i pray you, my good", "what is the", "o, my"]
DEMO_TYPOS = [("to be or not to", "bw"), ("i pray you, my good", "lprd")]  # mistyped next words


def _say(step: str, text: str) -> None:
    print(f"[demo {step}] {text}", flush=True)


def _shared(client, prompt: str) -> list[str]:
    """The top-3 of the user's server-held personalization (without the device's own cache)."""
    return [s.word for s in client.suggest(prompt, local=False)]


def _query_encrypted(release_dir: Path, out: Path, data_config: DataConfig) -> dict:
    from keyboard_sim.api_client import PredictionClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(release_dir, out / "api" / "sessions.db", port, workers=2)
    try:
        wait_healthy(url, server, timeout=180.0)
        users = split_users(
            load_users(data_config.source, data_config.jsonl_path, data_config.cache_dir), data_config.split
        )
        user = max(users.heldout, key=lambda u: len(u.lines))  # a held-out user: never trained on
        earlier, later = local_split(user.lines, data_config.split.later_fraction)
        phone = PredictionClient(url).create_user().open()
        added = phone.contribute(earlier)  # encrypted statistics; the text stays on the phone
        words = later[0].split()
        for n in range(len(words)):  # the keyboard suggests while the user types a new sentence ...
            phone.suggest(" ".join(words[:n]))
        sent = phone.sentence_sent(later[0])  # ... and adds it to the user's adapter once it is sent
        _say(
            "5/5",
            f"sentence sent: increment {sent['increment_bytes']} B, {sent['contexts_queried']} re-queried",
        )
        device = PredictionClient(url).import_user(phone.export_user()).open()  # a second device
        _say("5/5", f"user key shared with a second device; increment {added['increment_bytes']} B")
        results = {}
        for prompt in DEMO_PROMPTS:
            start = time.perf_counter()
            suggestions = device.suggest(prompt)
            ms = (time.perf_counter() - start) * 1000
            results[prompt] = [(s.word, round(s.probability, 3)) for s in suggestions]
            shown = ", ".join(f"{w} ({p:.2f})" for w, p in results[prompt])
            _say("5/5", f"{prompt!r} -> {shown}   [{ms:.0f} ms round trip]")
        corrections = {}
        for prompt, typed in DEMO_TYPOS:
            fixed = device.autocorrect(prompt, typed)
            corrections[f"{prompt} [{typed}]"] = [(s.word, round(s.probability, 3)) for s in fixed]
            shown = ", ".join(f"{s.word} ({s.probability:.2f})" for s in fixed)
            _say("5/5", f"{prompt!r} + typed {typed!r} -> autocorrect {shown}")
        summary = {
            "user": user.user_id,
            "suggestions": results,
            "autocorrect": corrections,
            "eval_key_bytes": len(device.eval_keys),
            "increment_bytes": added["increment_bytes"],
            "adapter_bytes": added["adapter_bytes"],
            "sentence_sent": sent,
            # the server-held personalization, without the device caches
            "second_device_same_top3": all(_shared(phone, p) == _shared(device, p) for p in DEMO_PROMPTS),
            "bytes_sent": device.bytes_sent,
            "bytes_received": device.bytes_received,
        }
        device.close()
        phone.delete_user()
        return summary
    finally:
        stop_server(server)  # the whole process group: uvicorn and its HE workers


def _start_to_final(card: dict) -> str:
    start, final = card["metrics"]["start"], card["metrics"]["final"]
    return (
        f"top-1 {start['top1']:.4f} -> {final['top1']:.4f}, loss {start['loss']:.3f} -> {final['loss']:.3f}"
    )


def _federated_without_dp(fed_cfg: FederationConfig, run_dir: Path) -> dict:
    """The bench's no-DP arm (``plain_fl_config``) on the demo's devices, one pass over their windows."""
    from hushtype.bench_federated import plain_fl_config
    from hushtype.simulation import run_federated
    from keyboard_sim.federation import load_data, select_devices

    windows = [len(u.train) for u in select_devices(load_data(fed_cfg).train_users, fed_cfg)]  # cached
    plain = plain_fl_config(fed_cfg, data_epochs=1.0, device_windows=windows)
    return run_federated(
        dataclasses.replace(plain, run_dir=str(run_dir), eval_max_examples=fed_cfg.eval_max_examples)
    )


def run_demo(
    out: Path,
    data_config: DataConfig,
    *,
    seed: int = 0,
    devices: int = 200,
    devices_per_round: int = 50,
    rounds: int = 10,
) -> dict:
    """Run all five steps, writing everything under ``out``; returns a summary dict."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _say("1/5", "baselines on held-out users: Kneser-Ney trigram vs central LSTM and NPLM (no DP)")
    quality = run_quality(QualityConfig(quick=True, seed=seed, release_dir=str(out / "central")), data_config)
    _say(
        "1/5",
        f"{quality['model'].upper()} top-1 {quality['top1']:.3f} top-3 {quality['top3']:.3f} | NPLM top-1 "
        f"{quality['nplm_top1']:.3f} top-3 {quality['nplm_top3']:.3f} | n-gram top-1 "
        f"{quality['ngram_top1']:.3f} top-3 {quality['ngram_top3']:.3f} | OOV {quality['oov_rate']:.3f}",
    )

    _say("2/5", "warm start: NPLM on the public plays only")
    warm = pretrain_public(data_config, out / "pretrained", seed=seed)
    _say("2/5", f"public-only model: held-out top-1 {warm['metrics']['heldout']['top1']:.3f}")

    from hushtype.simulation import run_federated
    from keyboard_sim.federation import federation_fields

    _say(
        "3/5",
        f"federated DP-SGD: {devices} devices, {devices_per_round} per round, {rounds} rounds, "
        "CKKS-encrypted aggregation, FedAdam on the decrypted mean, adaptive clipping, user epsilon <= 8",
    )
    fed_cfg = FederationConfig(
        devices=devices,
        devices_per_round=devices_per_round,
        rounds=rounds,
        aggregation="he",
        warm_start=str(out / "pretrained"),
        run_dir=str(out / "federated"),
        seed=seed,
        **federation_fields(data_config),
        extra={  # drawn on progress.png, so a reader sees how far federated training got
            "references": {
                f"central {quality['model']} (no DP)": quality["top1"],
                "central nplm (no DP)": quality["nplm_top1"],
                "public-only": warm["metrics"]["heldout"]["top1"],
            }
        },
    )
    card = run_federated(fed_cfg)
    _say(
        "3/5",
        f"user-level epsilon {card['user_epsilon']:.2f} (delta {card['user_delta']:.1e}); "
        f"max device example-level epsilon {card['max_device_example_epsilon']:.2f}; "
        f"held-out {_start_to_final(card)}",
    )
    no_dp = _federated_without_dp(fed_cfg, out / "federated_no_dp")
    _say(
        "3/5",
        f"the same devices without DP (no clip, no noise, plain sums): held-out {_start_to_final(no_dp)}",
    )

    from hushtype.adapter_settings import record_adapter_settings

    adapter = record_adapter_settings(str(out / "federated" / "release"), data_config)
    _say("4/5", f"user adapter settings (chosen on {adapter['chosen_on']}): {adapter}")
    _say("4/5", "serving the DP release on encrypted input")
    served = _query_encrypted(out / "federated" / "release", out, data_config)
    summary = {
        "quality": quality,
        "pretrained": warm["metrics"]["heldout"],
        "federated": card,
        "federated_no_dp": no_dp,
        "encrypted_query": served,
        "seconds": time.perf_counter() - start,
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    _say("done", f"{summary['seconds']:.0f} s; everything is in {out}/ (demo.json, federated/, central/)")
    return summary
