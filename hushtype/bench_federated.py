"""``hushtype bench federated``: does federated training learn, and what does privacy cost?

On one split and one public warm start, in one run, every number scored on the same held-out users:

    public_top1     the warm start (public split only, no private text)
    central_top1    the warm start fine-tuned centrally (Adam, no DP) on the pooled data of the N devices
    plain_fl_top1   federated, no DP at all (no clip, no noise), plain aggregation
    dp_fl_top1      federated at the shipped defaults (user-level DP, example-level DP-SGD, HE aggregation)
    frontier        federated DP at user-level epsilon in {1, 2, 4, 8, 16} (shipped defaults otherwise,
                    plain aggregation: CKKS changes the mean by < 1e-5, tests/server/strategies)

``gap_closed_x = (x - public) / (central - public)``. ``client_rounds_per_min`` is device updates
aggregated per minute of round time in the DP + HE run; ``he_round_ratio`` its mean round time over the
epsilon-8 frontier run's (the same configuration with plain aggregation). Every federated run is a
real Flower simulation (``hushtype.simulation.run_federated``). Prints one JSON object; writes
``frontier.png`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hushtype.pretrain import pretrain_public
from keyboard_sim.dataset import DataConfig, build_federated_data
from keyboard_sim.federation import FederationConfig, federation_fields, select_devices
from models.data import Examples
from models.nplm import NPLM, load_weights
from models.release import load_release
from models.train import evaluate, train_central

__all__ = ["BenchConfig", "run_federated_bench", "plain_fl_config", "EPSILONS"]

EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class BenchConfig:
    """Size of the benchmark; ``quick`` (<= 10 min on 2 cores) keeps every field, on a smaller federation."""

    quick: bool = False
    out: str = "runs/bench_federated"
    seed: int = 0

    def federation(self, data_config: DataConfig, warm_start: Path, run_dir: Path) -> FederationConfig:
        """The shipped defaults, sized for this benchmark (quick: fewer devices and rounds)."""
        size = (
            dict(devices=100, devices_per_round=20, rounds=4, eval_max_examples=5000)
            if self.quick
            else dict(devices=200, devices_per_round=20, rounds=12, eval_max_examples=20000)
        )
        return FederationConfig(
            **size,
            warm_start=str(warm_start),
            run_dir=str(run_dir),
            seed=self.seed,
            **federation_fields(data_config),
        )


def plain_fl_config(config: FederationConfig) -> FederationConfig:
    """The same federation without any privacy: no user clip or noise, no example noise, plain sums."""
    return dataclasses.replace(
        config,
        aggregation="plain",
        clip=0.0,
        adaptive_clip=False,
        noise_multiplier=0.0,
        target_epsilon=None,
        example_noise_multiplier=0.0,
        max_grad_norm=1e6,
        trainable="embedding,w1,b1,w2,b2",
    )


def _eval_set(heldout: Examples, config: FederationConfig) -> Examples:
    """The held-out windows the server scores (same seeded subset as ``server_app.heldout_sample``)."""
    from server.server_app import heldout_sample

    return heldout_sample(heldout, config.eval_max_examples, config.seed)


def _central(warm_start: Path, pooled: Examples, eval_set: Examples, *, steps: int, seed: int) -> dict:
    """Warm start + Adam on the devices' pooled data (no DP): the upper reference."""
    release = load_release(warm_start)
    model = load_weights(NPLM(release.config), release.weights)
    torch.manual_seed(seed)
    epochs = steps * 512 / len(pooled)
    summary = train_central(model, pooled, epochs=epochs, lr=1e-3, batch_size=512, seed=seed)
    return {**evaluate(model, eval_set), "steps": summary["steps"], "seconds": summary["seconds"]}


def _fl(config: FederationConfig) -> dict:
    from hushtype.simulation import run_federated

    start = time.perf_counter()
    card = run_federated(config)
    rows = [json.loads(line) for line in (Path(config.run_dir) / "rounds.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["round"] > 0]
    round_seconds = sum(r.get("seconds", 0.0) for r in trained)
    return {
        "top1": card["metrics"]["final"]["top1"],
        "top3": card["metrics"]["final"]["top3"],
        "best_top1": max(r["top1"] for r in trained),
        "user_epsilon": card["user_epsilon"],
        "user_delta": card["user_delta"],
        "participants": card["participants"],
        "client_rounds_per_min": 60.0 * card["participants"] / round_seconds if round_seconds else None,
        "round_seconds": round_seconds / len(trained) if trained else None,
        "seconds": time.perf_counter() - start,
    }


def _gap(x: float, public: float, central: float) -> float | None:
    return (x - public) / (central - public) if central != public else None


def plot_frontier(path: Path, frontier: list[dict], refs: dict[str, float]) -> Path:
    """frontier.png: held-out top-1 vs user-level epsilon, with the reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["epsilon"] for p in frontier], [p["top1"] for p in frontier], "o-", label="federated DP")
    for i, (name, value) in enumerate(refs.items()):
        ax.axhline(value, linestyle=":", color=f"C{i + 1}", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("user-level epsilon")
    ax.set_ylabel("held-out top-1")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_federated_bench(bench: BenchConfig, data_config: DataConfig | None = None) -> dict:
    """Run every arm in one process and return the JSON-ready result."""
    start = time.perf_counter()
    data_config = data_config or DataConfig()
    out = Path(bench.out)
    out.mkdir(parents=True, exist_ok=True)
    warm = out / "pretrained"
    if not (warm / "model_card.json").is_file():  # the public warm start is reused across runs
        pretrain_public(data_config, warm, epochs=1.0 if bench.quick else 3.0, seed=bench.seed)
    shipped = bench.federation(data_config, warm, out / "dp_he")
    data = build_federated_data(data_config)
    eval_set = _eval_set(data.heldout, shipped)
    pooled = Examples.concat((u.train for u in select_devices(data.train_users, shipped)), data.context)
    public = evaluate(load_weights(NPLM(load_release(warm).config), load_release(warm).weights), eval_set)
    central = _central(warm, pooled, eval_set, steps=150 if bench.quick else 300, seed=bench.seed)

    plain = _fl(dataclasses.replace(plain_fl_config(shipped), run_dir=str(out / "plain")))
    dp = _fl(shipped)
    frontier, same_as_dp = [], None
    for eps in EPSILONS:
        point = dataclasses.replace(
            shipped,
            aggregation="plain",
            noise_multiplier=None,
            target_epsilon=eps,
            run_dir=str(out / f"eps_{eps:g}"),
        )
        run = _fl(point)
        if eps == shipped.target_epsilon:
            same_as_dp = run  # the shipped config with plain aggregation: the HE round-time baseline
        frontier.append({"epsilon": run["user_epsilon"], "top1": run["top1"], "top3": run["top3"]})
    refs = {
        "central (no DP)": central["top1"],
        "public-only warm start": public["top1"],
        "FL, no DP": plain["top1"],
    }
    plot_frontier(out / "frontier.png", frontier, refs)
    return {
        "central_top1": central["top1"],
        "public_top1": public["top1"],
        "plain_fl_top1": plain["top1"],
        "dp_fl_top1": dp["top1"],
        "dp_user_epsilon": dp["user_epsilon"],
        "dp_user_delta": dp["user_delta"],
        "gap_closed_plain": _gap(plain["top1"], public["top1"], central["top1"]),
        "gap_closed_dp": _gap(dp["top1"], public["top1"], central["top1"]),
        "frontier": frontier,
        "client_rounds_per_min": dp["client_rounds_per_min"],
        "devices": shipped.devices,
        "rounds": shipped.rounds,
        "seconds": time.perf_counter() - start,
        "devices_per_round": shipped.devices_per_round,
        "he_round_ratio": (
            dp["round_seconds"] / same_as_dp["round_seconds"]
            if same_as_dp and same_as_dp["round_seconds"]
            else None
        ),
        "heldout_windows": len(eval_set),
        "topk_spread": float(np.sqrt(central["top1"] * (1 - central["top1"]) / len(eval_set))),
        "plain_fl_best_top1": plain["best_top1"],
        "quick": bench.quick,
        "data_source": data_config.source,
        "frontier_png": str(out / "frontier.png"),
    }
