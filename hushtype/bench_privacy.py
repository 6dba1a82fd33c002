"""``hushtype bench privacy``: what the federated model memorises, measured with secret-sharer canaries.

Carlini et al. 2019 ("The Secret Sharer", arXiv:1802.08232), as Ramaswamy et al. 2020 audited Gboard
(arXiv:2009.10031). Every setting is one real Flower run (``hushtype.simulation.run_federated``) of
``FederationConfig`` sized as ``hushtype bench federated`` (its ``BenchConfig.federation``: the shipped
defaults, whatever they are), with every canary cell planted in the same run (``canary_copies`` x
``canary_users``, ``canaries_per_cell`` canaries each, ``keyboard_sim.canaries``)::

    no_dp           ``bench_federated.plain_fl_config`` (plain aggregation, every array trainable, no clip,
                    no noise at either level) with FedAvgM (eta 1, beta 0.9; the plain recipe measured to
                    learn, README "Federated training") and 4 local epochs (cap 100 steps): memorisation's
                    upper end. Not run with HE: unclipped full-model sums exceed the CKKS preset's
                    provable budget (``HEParams.max_l2_sum``), HE aggregation needs the clip.
    dp_shipped      the shipped defaults (user-level DP at the default target epsilon, HE aggregation)
    shipped_no_noise  the shipped recipe without clip or noise at either level (full bench only): the
                    control that tells the recipe's own (non-)memorisation from what the noise does
    dp_eps_<e>      the shipped defaults at user-level target epsilon e, plain aggregation (CKKS changes
                    the mean by < 1e-5, tests/server/test_he_simulation.py)

Exposure of a canary ``<prefix> s_1..s_k`` on the released model: its secret's log-perplexity
-sum_j log p(s_j | prefix, s_<j) ranked among R random alternative secrets (sampling estimator,
``keyboard_sim.canaries.exposure``: log2(R + 1) - log2 rank, at most log2(R + 1)). ``exposure_chance``
is the same measurement on the public warm start, which never saw a canary. The ``served`` block
repeats it for a few canaries through the encrypted path (``hushtype serve`` on the no-DP release,
``PredictionClient``: the server computes the head on ciphertexts, the client decrypts the scores) and
checks the ranks against the released model's. Prints one JSON object; writes ``exposure.png``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from federation.wire import STAT_CAPS
from hushtype.bench_federated import BenchConfig, epsilon_axes, plain_fl_config, save_epsilon_plot
from hushtype.pretrain import pretrain_public
from keyboard_sim.canaries import (
    Canary,
    candidate_secrets,
    exposure,
    exposure_extrapolated,
    plan_canaries,
)
from keyboard_sim.dataset import DataConfig
from keyboard_sim.federation import FederationConfig
from models.factory import build_model, load_weights
from models.release import load_release

__all__ = ["PrivacyBenchConfig", "run_privacy_bench", "canary_scores"]

CANARY_COPIES = (1, 4, 16)
CANARY_USERS = (1, 4)
NO_NOISE = dict(  # no user-level clip or noise, no example-level noise: the shipped recipe otherwise
    clip=0.0, adaptive_clip=False, noise_multiplier=0.0, target_epsilon=None,
    example_noise_multiplier=0.0, max_grad_norm=1e6,
)  # fmt: skip
NO_DP_RECIPE = dict(  # FedAvgM as measured to learn (README), devices running 4 local epochs (cap 100 steps)
    server_optimizer="fedavgm", server_lr=1.0, server_momentum=0.9, local_epochs=4.0, max_local_steps=100,
    # the last iterate of uniform draws: canaries sit on the devices the uniform sampler draws most
    # (keyboard_sim.canaries.plan_canaries), which the bench arm's draws by passes would not follow
    device_sampling="uniform", server_ema=0.0,
)  # fmt: skip


@dataclass
class PrivacyBenchConfig:
    """Size of the audit; ``quick`` (<= 10 min on 2 cores) keeps every field on a smaller federation."""

    quick: bool = False
    out: str = "runs/bench_privacy"
    seed: int = 0
    candidates: int = 999  # R alternative secrets per canary (exposure is at most log2(R + 1) ~ 10 bits)
    served_canaries: int = 2  # canaries measured through the encrypted serving path ...
    served_candidates: int = 15  # ... each against this many alternatives (one HE query per context)

    @property
    def epsilons(self) -> tuple[float, ...]:
        """User-level target epsilons of the dp_eps settings."""
        return (64.0,) if self.quick else (1.0, 4.0, 16.0, 64.0)

    def settings(self, base: FederationConfig) -> dict[str, FederationConfig]:
        """Every run of the audit, by name (run_dir set under ``out``)."""
        out = Path(self.out)
        no_dp = dataclasses.replace(plain_fl_config(base), **NO_DP_RECIPE)
        runs = {"no_dp": no_dp, "dp_shipped": base}
        if not self.quick:  # the control: is the shipped recipe at chance because of the noise?
            runs["shipped_no_noise"] = dataclasses.replace(base, aggregation="plain", **NO_NOISE)
        for eps in self.epsilons:
            runs[f"dp_eps_{eps:g}"] = dataclasses.replace(
                base, aggregation="plain", noise_multiplier=None, target_epsilon=eps
            )
        return {name: dataclasses.replace(cfg, run_dir=str(out / name)) for name, cfg in runs.items()}


# ---------------------------------------------------------------------------------------- scoring
def _log_probs(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.long))
        logp = torch.log_softmax(logits.double(), dim=-1)
        return logp[torch.arange(len(y)), torch.as_tensor(y, dtype=torch.long)].numpy()


def _contexts(canary: Canary, secrets: np.ndarray, j: int, context: int) -> np.ndarray:
    """(n, context) windows predicting secret word j of each candidate (left-padded with <s> = 1)."""
    n = len(secrets)
    stream = np.hstack([np.ones((n, context), np.int64), np.tile(canary.prefix, (n, 1)), secrets[:, :j]])
    return stream[:, -context:]


def canary_scores(model: torch.nn.Module, canary: Canary, secrets: np.ndarray, context: int) -> np.ndarray:
    """Log-perplexity -sum_j log p(s_j | prefix, s_<j) of every candidate secret (row 0: the canary's)."""
    model.eval()
    total = np.zeros(len(secrets))
    for j in range(secrets.shape[1]):
        total -= _log_probs(model, _contexts(canary, secrets, j, context), secrets[:, j])
    return total


def served_scores(client: object, canary: Canary, secrets: np.ndarray, context: int) -> np.ndarray:
    """``canary_scores`` through the encrypted path: one decrypted-logits query per distinct context."""
    total = np.zeros(len(secrets))
    cache: dict[tuple, np.ndarray] = {}
    for j in range(secrets.shape[1]):
        for i, row in enumerate(_contexts(canary, secrets, j, context)):
            key = tuple(int(v) for v in row)
            if key not in cache:
                logits = np.asarray(client.logits(row), dtype=np.float64)  # type: ignore[attr-defined]
                cache[key] = logits - np.logaddexp.reduce(logits)
            total[i] -= cache[key][secrets[i, j]]
    return total


def _load_model(release_dir: Path) -> tuple[torch.nn.Module, int]:
    release = load_release(release_dir)
    return load_weights(build_model(release.config), release.weights), release.config.context


def _exposures(
    release_dir: Path, canaries: list[Canary], bench: PrivacyBenchConfig, vocab: int
) -> tuple[list[float], list[float]]:
    """(rank-based, extrapolated) exposure of every canary on a release."""
    model, context = _load_model(release_dir)
    ranked, fitted = [], []
    for canary in canaries:
        secrets = candidate_secrets(canary, bench.candidates, vocab, bench.seed)
        scores = canary_scores(model, canary, secrets, context)
        ranked.append(exposure(scores))
        fitted.append(exposure_extrapolated(scores))
    return ranked, fitted


def _spread(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": len(a),
    }


def _by_cell(canaries: list[Canary], values: list[float]) -> dict:
    cells: dict[str, list[float]] = {}
    for canary, value in zip(canaries, values, strict=True):
        cells.setdefault(canary.cell, []).append(value)
    return {cell: _spread(v) for cell, v in cells.items()}


def chance_exposure(candidates: int) -> float:
    """E[log2(R + 1) - log2 rank] for a rank uniform on 1..R+1 (a model that never saw the canary)."""
    n = candidates + 1
    return float(math.log2(n) - sum(math.log2(r) for r in range(1, n + 1)) / n)


# ---------------------------------------------------------------------------------------- served
def _served(release_dir: Path, canaries: list[Canary], bench: PrivacyBenchConfig, vocab: int) -> dict:
    """Exposure through ``hushtype serve`` (encrypted head) vs the released model, on the same candidates."""
    from hushtype.serve_process import free_port, start_server, stop_server, wait_healthy
    from keyboard_sim.api_client import PredictionClient

    model, context = _load_model(release_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(bench.out) / "serve.log"
    proc = start_server(release_dir, Path(bench.out) / "sessions.db", port, 1, log, allow_non_private=True)
    start = time.perf_counter()
    try:
        wait_healthy(url, proc)
        client = PredictionClient(url).open()
        rows = []
        for canary in canaries[: bench.served_canaries]:
            secrets = candidate_secrets(canary, bench.candidates, vocab, bench.seed)[
                : bench.served_candidates + 1
            ]
            plain = canary_scores(model, canary, secrets, context)
            served = served_scores(client, canary, secrets, context)
            rows.append(
                {
                    "cell": canary.cell,
                    "exposure_plain": exposure(plain),
                    "exposure_served": exposure(served),
                    "ranks_agree": bool(np.array_equal(np.argsort(plain), np.argsort(served))),
                    "max_abs_logppl_diff": float(np.max(np.abs(plain - served))),
                }
            )
        client.close()
    finally:
        stop_server(proc)
    return {
        "setting": "no_dp",
        "candidates": bench.served_candidates,
        "canaries": rows,
        "ranks_agree": all(r["ranks_agree"] for r in rows),
        "seconds": time.perf_counter() - start,
    }


# ---------------------------------------------------------------------------------------- plot
def plot_exposure(path: Path, result: dict) -> Path:
    """exposure.png: mean exposure (one user, by copies) vs user-level epsilon, chance band, no DP."""
    dp = sorted(
        (s for s in result["settings"] if s.startswith("dp_eps_") or s == "dp_shipped"),
        key=lambda s: result["user_epsilon"][s],
    )
    xs = [result["user_epsilon"][s] for s in dp]
    x_inf = max(xs) * 4
    fig, ax = epsilon_axes()
    for i, copies in enumerate(CANARY_COPIES):
        cell = f"copies={copies},users=1"
        means = [result["exposure"][s][cell]["mean"] for s in dp + ["no_dp"]]
        stds = [result["exposure"][s][cell]["std"] for s in dp + ["no_dp"]]
        ax.errorbar(
            xs + [x_inf],
            means,
            yerr=stds,
            fmt="o-",
            color=f"C{i}",
            capsize=3,
            label=f"{copies} copies, 1 user",
        )
    chance = result["exposure_chance"]
    ax.axhspan(
        chance["mean"] - chance["std"],
        chance["mean"] + chance["std"],
        color="grey",
        alpha=0.25,
        label="chance (warm start)",
    )
    ax.axhline(result["exposure_max"], color="k", linestyle=":", label="estimator maximum")
    ticks = (xs + [x_inf], [f"{x:.3g}" for x in xs] + ["no DP"])
    return save_epsilon_plot(fig, ax, path, "exposure (bits)", legend_size=7, xticks=ticks)


# ---------------------------------------------------------------------------------------- run
def _canary_config(base: FederationConfig) -> FederationConfig:
    return dataclasses.replace(base, canary_copies=CANARY_COPIES, canary_users=CANARY_USERS)


def run_privacy_bench(bench: PrivacyBenchConfig, data_config: DataConfig | None = None) -> dict:
    """Every setting in one process; returns the JSON-ready result."""
    from hushtype.simulation import run_federated
    from keyboard_sim.federation import federation_fields, load_data

    start = time.perf_counter()
    data_config = data_config or DataConfig()
    out = Path(bench.out)
    out.mkdir(parents=True, exist_ok=True)
    warm = out / "pretrained"
    if not (warm / "model_card.json").is_file():  # the public warm start is reused across runs
        pretrain_public(data_config, warm, epochs=1.0 if bench.quick else 3.0, seed=bench.seed)
    data = load_data(FederationConfig(**federation_fields(data_config)))  # what the runs load
    sized = BenchConfig(quick=bench.quick, seed=bench.seed).federation(data_config, data, warm, out / "base")
    base = _canary_config(sized)
    vocab_words = data.vocab.words
    canaries = plan_canaries(base, vocab_words)
    vocab = len(vocab_words)
    chance, chance_fit = _exposures(warm, canaries, bench, vocab)
    result: dict = {
        "settings": {},
        "exposure": {},
        "exposure_extrapolated": {},
        "user_epsilon": {},
        "example_epsilon": {},
    }
    for name, config in bench.settings(base).items():
        run_start = time.perf_counter()
        card = run_federated(config)
        release = Path(config.run_dir) / "release"
        values, fitted = _exposures(release, canaries, bench, vocab)
        result["exposure"][name] = _by_cell(canaries, values)
        result["exposure_extrapolated"][name] = _by_cell(canaries, fitted)
        result["user_epsilon"][name] = card["user_epsilon"]
        result["example_epsilon"][name] = card["max_device_example_epsilon"]
        result["settings"][name] = {
            "aggregation": config.aggregation,
            "trainable": config.trainable,
            "server_optimizer": config.server_optimizer,
            "clip": config.clip,
            "target_epsilon": config.target_epsilon,
            "user_noise_multiplier": card["user_noise_multiplier"],
            "example_noise_multiplier": config.example_noise_multiplier,
            "example_epsilon_mean_last_round": _below_cap(card.get("mean_device_example_epsilon")),
            "top1": card["metrics"]["final"]["top1"],
            "start_top1": card["metrics"]["start"]["top1"],
            "seconds": time.perf_counter() - run_start,
        }
    result["served"] = _served(out / "no_dp" / "release", _one_user(canaries, 16), bench, vocab)
    result.update(
        {
            "exposure_chance": {**_spread(chance), "expected": chance_exposure(bench.candidates)},
            "exposure_extrapolated_chance": _spread(chance_fit),
            "exposure_chance_by_cell": _by_cell(canaries, chance),  # the same canaries, never seen
            "exposure_max": math.log2(bench.candidates + 1),
            "plain_fl_top1": result["settings"]["no_dp"]["top1"],
            "dp_fl_top1": result["settings"]["dp_shipped"]["top1"],
            "public_top1": result["settings"]["dp_shipped"]["start_top1"],
            "estimator": (
                f"exposure = log2(R+1) - log2(rank of the secret among R={bench.candidates} uniformly drawn "
                "alternative secrets + itself) under the model's log-perplexity; ties count against it"
            ),
            "canary": {
                "prefix": base.canary_prefix,
                "secret_words": base.canary_secret_words,
                "copies": list(CANARY_COPIES),
                "users": list(CANARY_USERS),
                "per_cell": base.canaries_per_cell,
                "holders": sorted({d for c in canaries for d in c.devices}),
            },
            "devices": base.devices,
            "devices_per_round": base.devices_per_round,
            "rounds": base.rounds,
            "quick": bench.quick,
            "data_source": data_config.source,
        }
    )
    result["exposure_png"] = str(plot_exposure(out / "exposure.png", result))
    result["seconds"] = time.perf_counter() - start
    return result


def _below_cap(value: float | None) -> float | None:
    """A device statistic at its wire cap means "at least the cap" (an infinite epsilon): None."""
    return None if value is None or value >= 0.999 * STAT_CAPS["example-epsilon"] else value


def _one_user(canaries: list[Canary], copies: int) -> list[Canary]:
    """The canaries of cell (copies, 1 user) first: the served check starts where exposure is high."""
    first = [c for c in canaries if c.users == 1 and c.copies == copies]
    return first + [c for c in canaries if c not in first]
