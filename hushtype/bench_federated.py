"""``hushtype bench federated``: does federated training learn, and what does privacy cost?

On one split and one public warm start (``--model``, default the federation's), in one run, every number
scored on the same held-out users:

    public_top1             the warm start (public split only, no private text)
    central_top1            the warm start fine-tuned centrally (Adam, no DP, every array, constant lr,
                            a per-step weight average) on the pooled data of the N devices,
                            early-stopped on their *later* lines (never on held-out users)
    central_trainable_top1  the same, training only what the DP devices train (``trainable``; a
                            ``lora<r>`` adapter is trained, then merged into W2);
    plain_fl_top1           federated, no DP at all (no clip, no noise), plain aggregation, every array
                            trained (plain torch on the device, K SGD steps a round), FedAdam on the
                            server, rounds (``plain_rounds`` x ``plain_devices_per_round``) for as many
                            windows as the central epochs; releases an EMA of the server's weights
    dp_fl_top1              federated at the shipped defaults (user-level DP, example-level DP-SGD, HE)
    frontier                federated DP at user-level epsilon in {1, 2, 4, 8, 16} (shipped defaults
                            otherwise, plain aggregation: CKKS changes the mean by < 1e-5)

``gap_closed_x = (x - public) / (central - public)``, each with its 95% interval over the held-out users
(``*_interval``: a paired bootstrap of users, ``hushtype.heldout``); ``loss_gap_closed_plain`` is the same
gap in held-out loss. Final models are scored on every held-out window (``--quick``: 5,000).
``dp_noise_over_clip`` is the user-level noise norm on the mean update over the clip,
``update_sigma * sqrt(d) / m`` for the ``dp_trained_numbers`` d. ``client_rounds_per_min`` is device
updates aggregated per minute of round time in the DP + HE run; ``he_round_ratio`` its mean round time
over the epsilon-8 frontier run's (the same configuration with plain aggregation). Every federated run
is a real Flower simulation (``hushtype.simulation.run_federated``). Prints one JSON object; writes
``frontier.png`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from federation.passes import draws_per_pass
from hushtype.heldout import HeldOut, gap_interval
from hushtype.pretrain import pretrain_public
from keyboard_sim.dataset import DataConfig, FederatedData, build_federated_data
from keyboard_sim.federation import (
    FederationConfig,
    eligible_users,
    federation_fields,
    select_devices,
    trainable_arrays,
)
from models.config import shipped_model_config
from models.data import Examples
from models.factory import build_model, load_weights, param_names
from models.fused import fuse_lstm
from models.lora import LORA_A, LORA_B, LoRAProjection
from models.release import load_release
from models.train import train_central

__all__ = [
    "BenchConfig",
    "run_federated_bench",
    "plain_fl_config",
    "fine_tune",
    "EPSILONS",
    "central_arm",
    "fl_arm",
    "gap_closed",
    "warm_model",
]

EPSILONS = (1.0, 2.0, 4.0, 8.0, 16.0)
# the no-DP arm (measured in process, all 777 Shakespeare devices, README "Federated training"): central
# Adam made federated. Devices take K plain-torch SGD steps on every array; the server runs FedAdam on
# their mean delta (tau well below the delta's ~5e-5 per-coordinate rms, so the step is Adam's, not
# SGD's); many short rounds, as many as the central data budget buys
PLAIN_LR = 0.05  # device SGD lr (FedAdam normalises the mean delta's scale)
PLAIN_LOCAL_STEPS = 8  # K batches of 32 a round: 133 rounds an epoch of 777 devices (K 4: same loss)
PLAIN_SERVER_OPTIMIZER = "fedadam"  # FedAvgM 0.9 (the previous recipe) and tau 1e-3 learned ~4x slower
PLAIN_SERVER_LR = 3e-3  # eta; at m 5 by passes, 1 epoch, loss (EMA): Shakespeare 4.902 vs 2e-3's 4.914 and
# 1e-3's 4.946, modern English 4.563 vs 4.606 (at m 20, uniform draws: 1e-3 same loss, 3e-3 at K 4 behind)
PLAIN_SERVER_TAU = 1e-6
PLAIN_DEVICES_PER_ROUND = 5  # small cohorts, more server steps for the same windows once every window
# trains once a pass (PLAIN_DEVICE_SAMPLING): in process at 1 epoch, EMA over 15% of the rounds, loss
# (top-1 on 20,000 windows): Shakespeare m 20 4.951 (0.1207), m 10 4.929 (0.1225), m 5 4.914 (0.1232),
# central 4.926 (0.1249); modern English m 10 4.705, m 5 4.606 (0.1766), central 4.593 (0.1708). Before
# passes, more users a round with fewer windows each lost at every mark (Shakespeare 0.5 epoch: 20 x 8
# 5.045, 40 x 4 5.069, 80 x 2 5.078, 160 x 1 5.105; README "More users a round, fewer windows each")
PLAIN_WEIGHTING = "examples"  # the mean delta weights each device by the windows it trained this round:
# uniform weights make a round's ~3,300 windows an effective batch of ~1,600 (harmonic mean of the device
# batches); in process at 1 epoch: top-1 0.1198 / loss 5.000 (README "MimeLite and the oracles")
PLAIN_EMA_SPAN = 0.15  # the arm releases a bias-corrected EMA of the global weights (federation.schedule)
# spanning this share of its rounds: decay 1 - 1 / (span x rounds), 0.95 at 133 rounds (in process at 1
# epoch top-1 0.1212 / loss 4.988 vs the last iterate's 0.1198 / 5.000; 0.9: 0.1206 / 4.992, 0.98: 0.1198 /
# 4.990); a fixed 0.95 lagged on the quick bench's 22 rounds (modern corpus: 0.1466 / 4.929 vs 0.1531 /
# 4.871); a cosine eta decay did not help (README "Server eta decay")
PLAIN_DEVICE_SAMPLING = "passes"  # each device drawn ceil(windows / (K x 32)) times a pass, its draws
# dealt in a seeded shuffle (federation.passes), so every window trains once a pass, as centrally. Uniform
# draws of m 20 trained only ~50% of the distinct windows a pass (70% of the windows sit in the 157
# devices with > 876), draws in proportion to windows ~82%; in process at 1 epoch, m 20, loss (EMA):
# uniform 5.000 (4.988), by windows 4.963 (4.961), passes 4.959 (4.951) (README "Every window once a pass")
PLAIN_EVAL_WINDOWS = 2000  # held-out windows scored each round (progress only: the bench scores the
# final model on its own held-out windows; 20,000 a round would cost more than the round)
PLAIN_EVAL_EVERY = 10  # and only every 10th round (and the last): ~0.3 s a scoring, ~10% of a round
CENTRAL_LR = 1e-3  # Adam, fine-tuning from the warm start
# the best central recipe measured (README "Server eta decay and server weight averaging"; fl_budget.py at
# 1 epoch): a constant lr and a per-step weight average competing on the valid windows, top-1 0.1232 /
# loss 4.926, vs 0.1212 / 4.958 with train_central's cosine to 10% (with or without the average)
CENTRAL_LR_FLOOR = 1.0  # the cosine's last lr factor: 1 = constant
CENTRAL_EMA = 0.992  # per step (~ the no-DP arm's 0.95 a round: the same share of the run)


@dataclass
class BenchConfig:
    """Size of the benchmark; ``quick`` (<= 10 min on 2 cores) keeps every field, on a smaller federation."""

    quick: bool = False
    out: str = "runs/bench_federated"
    seed: int = 0
    model: str = FederationConfig.model  # the kind federated (its shipped shape; lstm/mlp read 8 words)
    central_epochs: float | None = None  # central (and no-DP arm) data budget; None: 2 quick, 1 full

    def data(self, data_config: DataConfig) -> DataConfig:
        """The dataset with the window the model kind reads."""
        context = shipped_model_config(data_config.vocab_size, self.model).context
        return dataclasses.replace(data_config, context=context)

    def heldout_windows(self) -> int | None:
        """How many held-out windows score every arm's final model: all of them (quick: 5,000)."""
        return 5000 if self.quick else None

    def federation(
        self, data_config: DataConfig, data: FederatedData, warm_start: Path, run_dir: Path
    ) -> FederationConfig:
        """The shipped defaults, sized for this benchmark: every eligible train user of ``data`` (built
        from ``data_config``) a device (quick: 100)."""
        defaults = FederationConfig()
        eligible = len(eligible_users(data.train_users, defaults))
        size = (
            dict(devices=min(100, eligible), devices_per_round=20, rounds=4, eval_max_examples=5000)
            if self.quick
            else dict(
                devices=eligible,
                devices_per_round=min(defaults.devices_per_round, eligible),
                rounds=defaults.rounds,
                eval_max_examples=20000,
            )
        )
        return FederationConfig(
            **size,
            model=self.model,
            context=data_config.context,
            warm_start=str(warm_start),
            run_dir=str(run_dir),
            seed=self.seed,
            **federation_fields(data_config),
        )


def plain_round_windows(
    device_windows: list[int],
    batch_size: int = 32,
    local_steps: int = PLAIN_LOCAL_STEPS,
    device_sampling: str = PLAIN_DEVICE_SAMPLING,
) -> float:
    """Mean windows a sampled device trains on in a round of the no-DP arm (K batches, or all it has),
    devices drawn as ``device_sampling`` draws them ("windows": in proportion to their windows;
    "passes": each device ``ceil(n / (K B))`` times a pass, the last draw training the rest)."""
    windows = np.asarray(device_windows, dtype=np.float64)
    if device_sampling == "passes":
        return float(np.sum(windows) / sum(draws_per_pass(device_windows, local_steps * batch_size)))
    trained = np.minimum(windows, local_steps * batch_size)
    draw = windows if device_sampling == "windows" else np.ones_like(windows)
    return float(np.sum(draw * trained) / np.sum(draw))


def plain_ema(rounds: int) -> float:
    """The no-DP arm's EMA decay a round for a run of ``rounds`` (0: no average, for <= 1 / span rounds)."""
    return max(0.0, 1.0 - 1.0 / max(1.0, PLAIN_EMA_SPAN * rounds))


def plain_fl_config(
    config: FederationConfig,
    trainable: str = "all",
    data_epochs: float | None = None,
    device_windows: list[int] | None = None,
) -> FederationConfig:
    """The same federation without any privacy: no user clip or noise, no example noise, plain sums.

    ``trainable``: what its devices train (default every array). ``data_epochs``: run enough rounds of
    ``PLAIN_DEVICES_PER_ROUND`` devices, K steps each, for the devices to train on that many passes of
    ``device_windows`` (every device's window count), the central baseline's budget; None: the
    shipped rounds and cohort.
    """
    size = {}
    if data_epochs is not None:
        if not device_windows:
            raise ValueError("plain_fl_config: data_epochs needs device_windows (each device's window count)")
        per_round = min(PLAIN_DEVICES_PER_ROUND, config.devices)
        windows = per_round * plain_round_windows(device_windows, config.batch_size)
        rounds = max(1, math.ceil(data_epochs * sum(device_windows) / windows))
        size = dict(
            devices_per_round=per_round,
            rounds=rounds,
            min_clients=min(config.min_clients, per_round),
            checkpoint_every=rounds,  # weights + FedAdam moments are ~35 MB a checkpoint
            eval_max_examples=min(PLAIN_EVAL_WINDOWS, config.eval_max_examples or PLAIN_EVAL_WINDOWS),
            eval_every=PLAIN_EVAL_EVERY,
        )
    return dataclasses.replace(
        config,
        **size,
        aggregation="plain",
        clip=0.0,
        adaptive_clip=False,
        noise_multiplier=0.0,
        target_epsilon=None,
        example_noise_multiplier=0.0,  # devices run plain torch (keyboard_sim.plain_device)
        max_grad_norm=5.0,  # batch-gradient clip on the device: a stability guard, not privacy
        trainable=trainable,
        lr=PLAIN_LR,
        local_epochs=1.0,
        max_local_steps=PLAIN_LOCAL_STEPS,
        server_optimizer=PLAIN_SERVER_OPTIMIZER,
        server_lr=PLAIN_SERVER_LR,
        server_momentum=0.9,  # FedAdam's beta_1
        server_beta2=0.99,
        server_tau=PLAIN_SERVER_TAU,
        weighting=PLAIN_WEIGHTING,
        device_sampling=PLAIN_DEVICE_SAMPLING,
        server_ema=plain_ema(size.get("rounds", config.rounds)),
    )


def warm_model(warm_start: Path) -> torch.nn.Module:
    """The warm start as a module (an LSTM as torch's fused ``nn.LSTM``: same arrays, ~4x faster)."""
    release = load_release(warm_start)
    return fuse_lstm(load_weights(build_model(release.config), release.weights))


def fine_tune(
    warm_start: Path,
    pooled: Examples,
    valid: Examples,
    *,
    epochs: float,
    seed: int,
    trainable: tuple[str, ...] | None = None,
    adapter_arrays: dict[str, np.ndarray] | None = None,
    lr_floor: float = CENTRAL_LR_FLOOR,
    ema: float = CENTRAL_EMA,
) -> tuple[torch.nn.Module, dict]:
    """Warm start + Adam on ``pooled`` (no DP), early-stopped on ``valid`` (the devices' later lines);
    ``trainable``: only those arrays train (the rest stay the warm start's); ``adapter_arrays``: a LoRA
    adapter on W2 (``models.lora``) trains too, merged into W2 at the end; the lr decays by a cosine to
    ``lr_floor`` x ``CENTRAL_LR`` (``train_central``; 1.0: constant); ``ema`` > 0: its per-step weight
    average competes with the trained weights on ``valid``. Returns (model, summary)."""
    model = warm_model(warm_start)
    if trainable is not None:
        for key, name in param_names(model).items():
            model.get_parameter(name).requires_grad_(key in trainable)
    adapter = _attach_adapter(model, adapter_arrays) if adapter_arrays else None
    torch.manual_seed(seed)
    summary = train_central(
        model,
        pooled,
        epochs=epochs,
        lr=CENTRAL_LR,
        batch_size=512,
        seed=seed,
        valid=valid,
        lr_floor=lr_floor,
        ema=ema,
    )
    if adapter is not None:  # W2 + B A back in the head's place: the model has the released shape again
        model.set_submodule(_head_name(model), adapter.merged())
    return model, summary


def _head_name(model: torch.nn.Module) -> str:
    """The submodule name of the head's projection (W2, b2): "head.proj" (LSTM/MLP) or "fc2" (NPLM)."""
    return param_names(model)["w2"].rsplit(".", 1)[0]


def _attach_adapter(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> LoRAProjection:
    """Put a ``LoRAProjection`` (A and B from ``arrays``) in place of the head's projection; only B (and
    the projection's bias, if it was left trainable) trains."""
    proj = model.get_submodule(_head_name(model))
    adapter = LoRAProjection(proj, rank=arrays[LORA_A].shape[0])
    with torch.no_grad():
        adapter.down.copy_(torch.from_numpy(arrays[LORA_A]))
        adapter.lora.weight.copy_(torch.from_numpy(arrays[LORA_B]))
    model.set_submodule(_head_name(model), adapter)
    return adapter


def central_arm(warm_start: Path, pooled: Examples, valid: Examples, heldout: HeldOut, **fit) -> dict:
    """``fine_tune``'s model scored on the held-out windows, with its training summary."""
    model, summary = fine_tune(warm_start, pooled, valid, **fit)
    return {
        **heldout.score(model),
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "valid": summary["valid_per_epoch"],
    }


@dataclass
class BenchSplit:
    """One benchmark's data: the shipped federation sized for it and the windows its arms share."""

    data: FederatedData
    shipped: FederationConfig  # the shipped defaults with every eligible train user a device (quick: 100)
    heldout: HeldOut  # the held-out users' windows every arm's final model is scored on
    pooled: Examples  # the N devices' training windows (central's data)
    valid: Examples  # up to 20,000 of their later windows (central's early stopping)

    def device_windows(self) -> list[int]:
        """Every device's training window count (the no-DP arm's data budget)."""
        return [len(u.train) for u in select_devices(self.data.train_users, self.shipped)]


def bench_split(bench: BenchConfig, data_config: DataConfig, warm: Path, run_dir: Path) -> BenchSplit:
    """Build the dataset and size the shipped federation (run in ``run_dir``, from ``warm``) for ``bench``."""
    data = build_federated_data(data_config)
    shipped = bench.federation(data_config, data, warm, run_dir)
    pooled, valid = _train_users_data(data, shipped)
    heldout = HeldOut.sample(data, bench.heldout_windows(), shipped.seed)
    return BenchSplit(data, shipped, heldout, pooled, valid)


def _train_users_data(data: FederatedData, config: FederationConfig) -> tuple[Examples, Examples]:
    """(the N devices' pooled training windows, up to 20,000 of their later windows for early stopping)."""
    devices = select_devices(data.train_users, config)
    pooled = Examples.concat((u.train for u in devices), data.context)
    later = Examples.concat((u.later for u in devices), data.context)
    idx = np.sort(np.random.default_rng(config.seed).permutation(len(later))[:20_000])
    return pooled, Examples(later.x[idx], later.y[idx])


def fl_arm(config: FederationConfig, heldout: HeldOut | None = None) -> dict:
    """One real federation; with ``heldout`` its final release is scored there (not on the run's own
    per-round held-out sample)."""
    from hushtype.simulation import run_federated

    start = time.perf_counter()
    card = run_federated(config)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (Path(config.run_dir) / "rounds.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["round"] > 0]
    round_seconds = sum(r.get("seconds", 0.0) for r in trained)
    final = card["metrics"]["final"]
    if heldout is not None:
        final = heldout.score(warm_model(Path(config.run_dir) / "release"))
    return {
        "top1": final["top1"],
        "top3": final["top3"],
        "loss": final["loss"],
        "by_user": final.get("by_user"),  # per held-out user sums, for the intervals (rescored runs only)
        "best_top1": max((r["top1"] for r in trained if r["top1"] is not None), default=None),
        "user_epsilon": card["user_epsilon"],
        "user_delta": card["user_delta"],
        "update_sigma": card.get("user_update_noise_multiplier"),
        "participants": card["participants"],
        "client_rounds_per_min": 60.0 * card["participants"] / round_seconds if round_seconds else None,
        "round_seconds": round_seconds / len(trained) if trained else None,
        "seconds": seconds,
    }


def gap_closed(x: float, public: float, central: float) -> float | None:
    return (x - public) / (central - public) if central != public else None


def epsilon_axes():  # noqa: ANN201 (matplotlib is imported lazily: no types at module level)
    """A 6x4 in figure and its axes for a plot against user-level epsilon (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def save_epsilon_plot(
    fig, ax, path: Path, ylabel: str, *, legend_size: int = 8, xticks: tuple[list, list] | None = None
) -> Path:
    """Finish a plot made by ``epsilon_axes`` (log2 epsilon axis, labels, legend, grid) and save it."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    if xticks is not None:  # after the scale: setting the scale resets the tick locator
        ax.set_xticks(*xticks)
    ax.set_xlabel("user-level epsilon")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_frontier(path: Path, frontier: list[dict], refs: dict[str, float]) -> Path:
    """frontier.png: held-out top-1 vs user-level epsilon, with the reference lines."""
    fig, ax = epsilon_axes()
    ax.plot([p["epsilon"] for p in frontier], [p["top1"] for p in frontier], "o-", label="federated DP")
    for i, (name, value) in enumerate(refs.items()):
        ax.axhline(value, linestyle=":", color=f"C{i + 1}", label=name)
    return save_epsilon_plot(fig, ax, path, "held-out top-1")


def run_federated_bench(bench: BenchConfig, data_config: DataConfig | None = None) -> dict:
    """Run every arm in one process and return the JSON-ready result."""
    start = time.perf_counter()
    data_config = bench.data(data_config or DataConfig())
    out = Path(bench.out)
    out.mkdir(parents=True, exist_ok=True)
    warm = out / f"pretrained_{bench.model}"
    if not (warm / "model_card.json").is_file():  # the public warm start is reused across runs
        pretrain_public(
            data_config, warm, epochs=1.0 if bench.quick else 2.0, seed=bench.seed, kind=bench.model
        )
    split = bench_split(bench, data_config, warm, out / "dp_he")
    shipped, heldout, pooled, valid = split.shipped, split.heldout, split.pooled, split.valid
    public = heldout.score(warm_model(warm))
    epochs = bench.central_epochs or (2.0 if bench.quick else 1.0)
    central_args = dict(epochs=epochs, seed=bench.seed)
    central = central_arm(warm, pooled, valid, heldout, **central_args)
    warm_release = load_release(warm)
    model_config = warm_release.config
    dp_trainable = trainable_arrays(shipped, model_config)
    from server.server_app import adapter_weights

    adapter = adapter_weights(shipped, model_config)  # a trainable=lora<r> run's A and B = 0, else none
    central_trainable = central_arm(
        warm, pooled, valid, heldout, trainable=dp_trainable, adapter_arrays=adapter, **central_args
    )
    dp_numbers = sum(int(np.size({**warm_release.weights, **adapter}[k])) for k in dp_trainable)
    plain_config = plain_fl_config(shipped, data_epochs=epochs, device_windows=split.device_windows())
    plain = fl_arm(dataclasses.replace(plain_config, run_dir=str(out / "plain")), heldout)
    dp = fl_arm(shipped, heldout)
    frontier, same_as_dp = [], None
    for eps in EPSILONS:
        point = dataclasses.replace(
            shipped,
            aggregation="plain",
            noise_multiplier=None,
            target_epsilon=eps,
            run_dir=str(out / f"eps_{eps:g}"),
        )
        run = fl_arm(point, heldout)
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
        "central_trainable_top1": central_trainable["top1"],
        "public_top1": public["top1"],
        "plain_fl_top1": plain["top1"],
        "dp_fl_top1": dp["top1"],
        "dp_user_epsilon": dp["user_epsilon"],
        "dp_user_delta": dp["user_delta"],
        "gap_closed_plain": gap_closed(plain["top1"], public["top1"], central["top1"]),
        "gap_closed_dp": gap_closed(dp["top1"], public["top1"], central["top1"]),
        # 95% intervals over the held-out users (hushtype.heldout.gap_interval), and the same gap in loss
        "gap_closed_plain_interval": gap_interval(plain, public, central),
        "gap_closed_dp_interval": gap_interval(dp, public, central),
        "loss_gap_closed_plain": gap_closed(plain["loss"], public["loss"], central["loss"]),
        "loss_gap_closed_plain_interval": gap_interval(plain, public, central, metric="loss"),
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
        "heldout_windows": len(heldout),
        "heldout_users": heldout.n_users,
        "topk_spread": float(np.sqrt(central["top1"] * (1 - central["top1"]) / len(heldout))),
        "gap_closed_dp_vs_trainable": gap_closed(dp["top1"], public["top1"], central_trainable["top1"]),
        "dp_trained_numbers": dp_numbers,  # d: what each device clips, noises and sends
        # user-level noise norm on the mean update over the clip: update_sigma * sqrt(d) / m
        "dp_noise_over_clip": (dp["update_sigma"] or 0.0) * math.sqrt(dp_numbers) / shipped.devices_per_round,
        "losses": {
            "public": public["loss"],
            "central": central["loss"],
            "central_trainable": central_trainable["loss"],
            "plain_fl": plain["loss"],
            "dp_fl": dp["loss"],
        },
        "model": bench.model,
        "trainable": ",".join(dp_trainable),
        "plain_trainable": "all",
        "plain_rounds": plain_config.rounds,
        "plain_devices_per_round": plain_config.devices_per_round,
        "plain_seconds": plain["seconds"],
        "plain_round_seconds": plain["round_seconds"],
        "plain_local_steps": plain_config.max_local_steps,
        "plain_server": {
            "optimizer": plain_config.server_optimizer,
            "eta": plain_config.server_lr,
            "tau": plain_config.server_tau,
            "weighting": plain_config.weighting,
            "device_sampling": plain_config.device_sampling,
            "lr_schedule": plain_config.server_lr_schedule,
            "ema": plain_config.server_ema,
        },
        "central_epochs": epochs,
        "central_seconds": central["seconds"],
        "quick": bench.quick,
        "data_source": data_config.source,
        "frontier_png": str(out / "frontier.png"),
    }
