"""The aggregator as a Flower ServerApp: sample devices, aggregate, evaluate, account, record.

Per round t (``Strategy.start`` runs the loop; this module supplies the pieces):

    1. the strategy samples m of the N devices and sends w_t plus the round config
       (device lr, E, user-level clip C, distributed-noise share std sigma * C / sqrt(m), codec);
    2. it aggregates the deltas of the devices that answered (``server.strategies``);
    3. ``RoundAccounting`` (called by the strategy after aggregation, evaluation or not) steps the
       user-level accountant (q = m / N; the noise that arrived: sigma_t = sigma * sqrt(|A_t| / m))
       and counts rounds with fewer than ``min_clients`` usable replies;
    4. ``RoundScorer`` (the strategy's ``evaluate_fn``) scores w_{t+1} (with ``server_ema``: the EMA of
       w_1..w_{t+1}, also what is released) on held-out users, appends a line to rounds.jsonl, writes
       a checkpoint, and aborts the run (abort.json, ``FederationAborted``) after
       ``abort_after_failed_rounds`` failed rounds in a row;
    5. after the last round (``write_release``): progress.png, the model card and the release.

The pieces: ``calibrate_noise`` (sigma, and its split with the adaptive-clipping count),
``key_authority`` (the key authority process for the run's lifetime), ``build_strategy`` (the server
optimizer over plain or CKKS-summed deltas), ``RoundAccounting``, ``RoundScorer``, ``RunRecorder``,
``write_release``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log
from safetensors.numpy import save_file
from tqdm import tqdm

from federation import FederationConfig
from federation.schedule import IterateAverage
from models.config import ModelConfig, shipped_model_config
from models.data import Examples
from models.factory import build_model, export_weights, load_weights
from models.fused import fuse_lstm
from models.lora import lora_arrays, lora_rank, merge_lora
from models.release import load_release, save_release
from models.train import evaluate
from server.accounting import UserLevelAccountant, user_noise_for_epsilon
from server.example_accounting import example_epsilon_bound
from server.strategies import DeltaAggregation, PlainMean, QuantileClip, RoundSetup, make_strategy
from server.strategies.adaptive_clipping import update_noise_multiplier
from server.strategies.delta_aggregation import arrays_to_numpy, numpy_to_arrays

__all__ = [
    "make_server_app",
    "run_federation",
    "initial_weights",
    "adapter_weights",
    "heldout_sample",
    "heldout_indices",
    "RunRecorder",
    "RoundAccounting",
    "RoundScorer",
    "FederationAborted",
    "calibrate_noise",
    "key_authority",
    "build_strategy",
    "write_release",
    "eval_due",
]

INFO = logging.INFO
WARNING = logging.WARNING


def fresh_model_config(config: FederationConfig, vocab_size: int) -> ModelConfig:
    """The shape of a fresh ``config.model``: the shipped one, with ``embed_dim``/``hidden`` from ``config``;
    its window must be the data's (ValueError names ``FederationConfig.context``)."""
    shipped = shipped_model_config(vocab_size, config.model)
    if config.context != shipped.context:
        raise ValueError(
            f"FederationConfig.context={config.context} but model {config.model!r} reads {shipped.context} "
            f"words (models.config.shipped_model_config); set context={shipped.context}"
        )
    return dataclasses.replace(shipped, embed_dim=config.embed_dim, hidden=config.hidden)


def initial_weights(
    config: FederationConfig, vocab_words: list[str]
) -> tuple[dict[str, np.ndarray], ModelConfig, str]:
    """(w_0, model shape, provenance): the warm-start release, or a fresh seeded init."""
    if config.warm_start:
        release = load_release(config.warm_start)
        if release.vocab.words != vocab_words:
            raise ValueError(
                f"warm start {config.warm_start} was trained with a different vocabulary than this "
                "run's data; rebuild it from the same DataConfig (hushtype pretrain)"
            )
        if release.config.kind != config.model:
            raise ValueError(
                f"FederationConfig.model={config.model!r} but the warm start {config.warm_start} is a "
                f"{release.config.kind!r} model"
            )
        weights = {k: np.asarray(v, dtype=np.float32) for k, v in release.weights.items()}
        return weights, release.config, f"warm start {config.warm_start} (version {release.version})"
    model_config = fresh_model_config(config, len(vocab_words))
    torch.manual_seed(config.seed)
    return export_weights(build_model(model_config)), model_config, f"random init (seed {config.seed})"


def adapter_weights(config: FederationConfig, model_config: ModelConfig) -> dict[str, np.ndarray]:
    """The adapter arrays of a ``trainable=lora<r>`` run (``models.lora``: A from ``lora_seed``, B = 0),
    else none; the release merges them into W2."""
    rank = lora_rank([k.strip() for k in config.trainable.split(",")])
    if rank is None:
        return {}
    return lora_arrays(rank, model_config.hidden, model_config.vocab_size, config.lora_seed)


def heldout_indices(n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """Which of ``n`` held-out windows are scored: a fixed, seeded, sorted subset (all when ``max_examples``
    is None or at least ``n``)."""
    if max_examples is None or n <= max_examples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))


def heldout_sample(heldout: Examples, max_examples: int | None, seed: int) -> Examples:
    """The held-out windows ``heldout_indices`` picks (``heldout`` itself when it picks them all)."""
    idx = heldout_indices(len(heldout), max_examples, seed)
    return heldout if len(idx) == len(heldout) else Examples(heldout.x[idx], heldout.y[idx])


def _finite(value: float) -> float | None:
    """JSON has no infinity: inf/nan become null."""
    return float(value) if math.isfinite(value) else None


class RunRecorder:
    """Writes a run directory: rounds.jsonl, checkpoints, progress.png and the model card."""

    def __init__(
        self, run_dir: str | Path, *, checkpoint_every: int = 1, kept_rows: list[dict] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "model_card.json").unlink(missing_ok=True)  # written again when this run ends
        self.rounds_path = self.run_dir / "rounds.jsonl"
        self.rows: list[dict] = list(kept_rows or [])  # a resumed run keeps the rows up to its checkpoint
        self.rounds_path.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")
        self.checkpoint_every = checkpoint_every

    def record(
        self,
        row: dict,
        weights: dict[str, np.ndarray],
        *,
        final: bool = False,
        state: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append one round's row; checkpoint (weights, and the optimizer ``state``) every
        ``checkpoint_every`` rounds and at the end."""
        self.rows.append(row)
        with self.rounds_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if final or row["round"] % self.checkpoint_every == 0:
            arrays = {
                k: np.ascontiguousarray(v, dtype=np.float32).reshape(np.shape(v)) for k, v in weights.items()
            }
            save_file(arrays, str(self.run_dir / "checkpoints" / f"round_{row['round']:03d}.safetensors"))
            if state:
                state = {
                    k: np.ascontiguousarray(v, dtype=np.float64).reshape(np.shape(v))
                    for k, v in state.items()
                }
                save_file(
                    state,
                    str(self.run_dir / "checkpoints" / f"round_{row['round']:03d}.optimizer.safetensors"),
                )

    def plot(self, references: dict[str, float] | None = None) -> Path:
        """progress.png: held-out top-1/top-3 and user-level epsilon vs round.

        ``references`` (e.g. ``{"central top-1": 0.113, "public-only top-1": 0.105}``) are drawn as
        horizontal lines, so a reader sees how far federated training got between them.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rounds = [r["round"] for r in self.rows]
        scored = [r for r in self.rows if r["top1"] is not None]  # eval_every: not every round is scored
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
        ax1.plot([r["round"] for r in scored], [r["top1"] for r in scored], "o-", label="top-1")
        ax1.plot([r["round"] for r in scored], [r["top3"] for r in scored], "s-", label="top-3")
        for i, (name, value) in enumerate(sorted((references or {}).items())):
            ax1.axhline(value, color=f"C{i + 4}", linestyle=":", label=name)
        ax1.set_ylabel("held-out accuracy")
        ax1.legend()
        ax1.grid(alpha=0.3)
        eps = [r["user_epsilon"] if r["user_epsilon"] is not None else float("nan") for r in self.rows]
        ax2.plot(rounds, eps, "o-", color="C3", label="user-level epsilon")
        dev = [
            r["max_device_epsilon"] if r["max_device_epsilon"] is not None else float("nan")
            for r in self.rows
        ]
        ax2.plot(rounds, dev, "^--", color="C2", label="example-level epsilon bound (any device)")
        ax2.set_xlabel("round")
        ax2.set_ylabel("epsilon")
        ax2.legend()
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        path = self.run_dir / "progress.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def write_card(self, card: dict) -> Path:
        """model_card.json in the run directory."""
        path = self.run_dir / "model_card.json"
        path.write_text(json.dumps(card, indent=2, sort_keys=True, default=str), encoding="utf-8")
        return path


@dataclass
class NoisePlan:
    """The user-level noise of a run: what the accountant charges and what devices add.

    ``sigma`` is the multiplier the accountant is stepped with. Without adaptive clipping devices add
    ``sigma * C / sqrt(m)`` each; with it, the noised unclipped count (std ``count_stddev``) shares the
    budget, so devices add ``update_sigma * C_t / sqrt(m)`` with update_sigma from Andrew et al. Thm 1.
    """

    sigma: float
    update_sigma: float
    count_stddev: float


def calibrate_noise(config: FederationConfig) -> NoisePlan:
    """sigma from ``noise_multiplier`` or from ``target_epsilon`` over ``rounds`` rounds at q = m / N."""
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        sigma = user_noise_for_epsilon(
            target_epsilon=config.target_epsilon,
            sample_rate=config.sample_rate,
            rounds=config.rounds,
            delta=config.user_delta,
            accountant=config.accountant,
        )
    if not config.adaptive_clip:
        return NoisePlan(sigma, sigma, 0.0)
    # sigma_b: the paper's m / 20, but at least sigma, so the count takes at most 1/4 of the budget
    stddev = (
        config.clip_count_stddev
        if config.clip_count_stddev is not None
        else max(config.devices_per_round / 20, sigma)
    )
    return NoisePlan(sigma, update_noise_multiplier(noise_multiplier=sigma, count_stddev=stddev), stddev)


@contextmanager
def key_authority(config: FederationConfig) -> Iterator[object | None]:
    """For aggregation="he": the key authority in its own process for the run's lifetime (else None).

    The secret key lives only in that process; this one keeps the handle and the public context,
    which is also written to <run_dir>/key_authority/public_context.bin next to the audit log.
    """
    if config.aggregation != "he":
        yield None
        return
    from server.key_authority_service import KeyAuthorityService

    ka_dir = Path(config.run_dir) / "key_authority"
    service = KeyAuthorityService(
        ka_dir / "audit.jsonl",
        min_clients=min(config.min_clients, config.devices_per_round),  # a sum of one is that update
        public_context_path=ka_dir / "public_context.bin",
    )
    try:
        yield service
    finally:
        service.close()


def build_strategy(config: FederationConfig, noise: NoisePlan, authority: object | None) -> DeltaAggregation:
    """The server optimizer of ``config`` over plain or CKKS-summed deltas."""
    m = config.devices_per_round
    if authority is None:
        mean_update = PlainMean(weighting=config.weighting)
    else:
        from server.strategies.he_mean import HEMean

        mean_update = HEMean(key_authority=authority, devices_per_round=m, weighting=config.weighting)
    if config.adaptive_clip:
        clip: QuantileClip | float | None = QuantileClip(config.clip, config.clip_quantile, config.clip_lr)
    else:
        clip = config.clip or None
    setup = RoundSetup(
        mean_update=mean_update,
        devices_per_round=m,
        clip=clip,
        update_noise_multiplier=noise.update_sigma,
        clip_count_stddev=noise.count_stddev,
        seed=config.seed,
        base_dir=Path(config.run_dir) / "public_base" if config.base_by_reference else None,
        device_sampling=config.device_sampling,
        pass_chunk=(config.max_local_steps or 0) * config.batch_size,
    )
    return make_strategy(
        config.server_optimizer,
        setup,
        server_lr=config.server_lr,
        server_momentum=config.server_momentum,
        beta_2=config.server_beta2,
        tau=config.server_tau,
        min_available_nodes=m,
        lr_schedule=(config.server_lr_schedule, config.rounds, config.server_lr_floor),
    )


class FederationAborted(RuntimeError):
    """Too many rounds in a row had fewer usable replies than ``min_clients``."""


class RoundAccounting:
    """Called by the strategy after every round: steps the user-level accountant, aborts a failing run.

    A round with k of m sampled devices usable carries noise sigma * C * sqrt(k / m), so it is charged
    sigma_t = sigma * sqrt(k / m) at q = m / N (rounds with k = 0 release nothing and are not charged).
    """

    def __init__(self, config: FederationConfig, noise: NoisePlan, accountant: UserLevelAccountant) -> None:
        self.config = config
        self.noise = noise
        self.accountant = accountant
        self.failed_in_a_row = 0
        self.stats: dict[int, dict] = {}

    def replay(self, rows: list[dict]) -> None:
        """Charge the rounds of a resumed run again (rows as in rounds.jsonl)."""
        for row in rows:
            if row["round"] > 0:
                self.charge(row["participants"])

    def charge(self, participants: int) -> None:
        """Step the accountant for one round with ``participants`` usable updates."""
        if participants > 0:
            m = self.config.devices_per_round
            sigma_t = self.noise.sigma * math.sqrt(participants / m)
            self.accountant.step(noise_multiplier=sigma_t, sample_rate=self.config.sample_rate)

    def __call__(self, server_round: int, stats: dict) -> None:
        self.stats[server_round] = stats
        self.charge(int(stats["participants"]))
        if stats["participants"] >= self.config.min_clients:
            self.failed_in_a_row = 0
            return
        self.failed_in_a_row += 1
        log(
            WARNING,
            "round %d: %d usable replies < min_clients=%d (%d round(s) in a row)",
            server_round,
            stats["participants"],
            self.config.min_clients,
            self.failed_in_a_row,
        )


def _last_line(error: str) -> str:
    """The device's own exception line out of a (Ray) traceback."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1].rstrip("'>") if lines else error


def abort_reason(config: FederationConfig, server_round: int, stats: dict) -> str:
    """The message a failed run ends with: the round, the counts and the devices' own errors."""
    errors = sorted({_last_line(f.split(": ", 1)[-1]) for f in stats.get("failures", [])})
    return (
        f"round {server_round}: {stats['participants']} of {stats['sampled']} sampled devices replied "
        "usably, "
        f"fewer than min_clients={config.min_clients}, for {config.abort_after_failed_rounds} round(s) in a "
        f"row; the devices' errors: " + " | ".join(errors[:5])
    )


def roll_call(
    grid: Grid,
    expected: int,
    connect_timeout: float,
    reply_timeout: float,
    enrol: ConfigRecord | None = None,
) -> dict[int, dict[str, int]]:
    """Ask every connected SuperNode for its device (partition) id: ``{node_id: answer}``, the answer
    ``{"partition-id": id}`` (unless ``device_sampling="uniform"`` also ``"windows"``, its data size).

    ``enrol`` (the codec and, with HE, the federation public context) rides along, so devices get ready
    to train before the first round (``keyboard_sim.client_app``: imports, public context).

    Node ids are random in each run; sampling devices by their ids makes a seeded run sample the same
    devices every time. Waits up to ``connect_timeout`` seconds for ``expected`` SuperNodes to connect (they
    register asynchronously), then up to ``reply_timeout`` for their answers (a cold simulation worker
    imports torch and Opacus first: over a minute on a loaded machine); nodes that do not answer are left
    out (they are sampled by node id).
    """
    deadline = time.monotonic() + connect_timeout
    while len(list(grid.get_node_ids())) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    content = RecordDict({"config": enrol}) if enrol is not None else RecordDict()
    messages = [
        Message(content, dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in grid.get_node_ids()
    ]
    answers: dict[int, dict[str, int]] = {}
    for reply in grid.send_and_receive(messages, timeout=reply_timeout):
        if reply.has_error() or "metrics" not in reply.content:
            continue
        answers[reply.metadata.src_node_id] = {k: int(v) for k, v in reply.content["metrics"].items()}
    return answers


def resume_point(
    config: FederationConfig,
) -> tuple[list[dict], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The rows up to the last checkpointed round of the run in ``config.run_dir``, its weights and the
    server optimizer's state (empty if none was saved).

    Raises ``ValueError`` if the directory holds no run, another experiment (config hash), or a run that
    has already done all its rounds.
    """
    from safetensors.numpy import load_file

    run_dir = Path(config.run_dir)
    run_file, rounds_file = run_dir / "run.json", run_dir / "rounds.jsonl"
    if not run_file.is_file() or not rounds_file.is_file():
        raise ValueError(f"resume: {run_dir} holds no federated run to resume (no run.json/rounds.jsonl).")
    recorded = json.loads(run_file.read_text(encoding="utf-8"))["config_hash"]
    if recorded != config.config_hash():
        raise ValueError(
            f"resume: {run_dir} holds another experiment (config hash {recorded}, this config "
            f"{config.config_hash()}); resume with the same configuration or use a new run_dir."
        )
    rows = []
    for line in rounds_file.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a row cut short by the crash: the run resumes before it
    checkpointed = [
        i
        for i, r in enumerate(rows)
        if (run_dir / "checkpoints" / f"round_{r['round']:03d}.safetensors").is_file()
    ]
    if not checkpointed or rows[checkpointed[-1]]["round"] == 0:
        raise ValueError(f"resume: {run_dir} has no checkpoint after round 0; start the run again instead.")
    last = checkpointed[-1]
    if rows[last]["round"] >= config.rounds:
        raise ValueError(f"resume: the run in {run_dir} has already done its {config.rounds} rounds.")
    weights = load_file(str(run_dir / "checkpoints" / f"round_{rows[last]['round']:03d}.safetensors"))
    state_file = run_dir / "checkpoints" / f"round_{rows[last]['round']:03d}.optimizer.safetensors"
    state = load_file(str(state_file)) if state_file.is_file() else {}
    return rows[: last + 1], weights, state


def write_release(
    config: FederationConfig,
    recorder: RunRecorder,
    final: dict[str, np.ndarray],
    model_config: ModelConfig,
    vocab: object,
    card: dict,
) -> dict:
    """progress.png, the release of the final model and model_card.json; returns the card."""
    recorder.plot(references=config.extra.get("references"))
    save_release(
        recorder.run_dir / "release", final, model_config, vocab, {**card, "epsilon": card["user_epsilon"]}
    )
    recorder.write_card(card)
    return card


def _trained(config: FederationConfig, noise: NoisePlan) -> str:
    """How the release was trained, naming only the DP that was applied (the API shows it to apps)."""
    updates = "DP-FedAvg updates" if noise.sigma > 0 else "FedAvg updates without user-level noise"
    devices = (
        "example-level DP-SGD on devices"
        if config.example_noise_multiplier > 0
        else "plain local SGD on devices (no example-level DP)"
    )
    return f"federated {config.server_optimizer} over {updates} ({config.aggregation} aggregation), {devices}"


def _model_card(config: FederationConfig, run: dict) -> dict:
    """The run's model card from what ``run_federation`` measured (``run`` holds its pieces)."""
    rows, noise, accountant = run["rows"], run["noise"], run["accountant"]
    first, last = rows[0], rows[-1]
    return {
        "trained": _trained(config, noise),
        "start": run["provenance"],
        "round": last["round"],
        "user_epsilon": last["user_epsilon"],
        "user_delta": config.user_delta,
        "user_noise_multiplier": noise.sigma,
        "user_update_noise_multiplier": noise.update_sigma,
        "clip_count_stddev": noise.count_stddev,
        "user_clip": config.clip,
        "final_clip": last.get("clip"),
        "adaptive_clip": config.adaptive_clip,
        "device_sampling_rate": config.sample_rate,
        "user_accountant": config.accountant,
        "user_accountant_history": accountant.history,
        "max_device_example_epsilon": last["max_device_epsilon"],  # the public worst case, see below
        "mean_device_example_epsilon": last.get("example_epsilon_mean"),  # last round's devices, mean
        "example_delta": config.example_delta,
        "example_noise_multiplier": config.example_noise_multiplier,
        "example_max_grad_norm": config.max_grad_norm,
        "metrics": {
            "start": {k: first[k] for k in ("top1", "top3", "loss", "perplexity")},
            "final": {k: last[k] for k in ("top1", "top3", "loss", "perplexity")},
            "heldout_windows": run["heldout_windows"],
            "heldout_users": run["heldout_users"],
        },
        "participants": sum(r["participants"] for r in rows),
        "dropouts": sum(r["dropouts"] for r in rows),
        "seconds": run["seconds"],
        "config": asdict(config),
        "config_hash": config.config_hash(),
        "data": config.data_fields(),
        "caveats": [
            "user-level epsilon treats fixed-size device sampling as Poisson sampling with q = m / N",
            "secure_mode is off (torchcsprng unavailable); noise uses non-cryptographic RNGs",
            "max_device_example_epsilon is a bound from the public config (any device with >= "
            "min_device_examples windows taking part in every round), not a device's own value: the "
            "server only receives the mean over each round's devices (mean_device_example_epsilon)",
        ],
    }


UNSCORED: dict[str, float | None] = {"top1": None, "top3": None, "loss": None, "perplexity": None}


def eval_due(config: FederationConfig, server_round: int) -> bool:
    """Whether round t's model is scored on the held-out sample: t = 0, t = T, and every ``eval_every``-th."""
    return server_round == 0 or server_round >= config.rounds or server_round % config.eval_every == 0


def _scores_text(row: dict) -> str:
    """The log's view of a row's held-out scores ("not scored" between ``eval_every`` rounds)."""
    if row["top1"] is None:
        return "not scored"
    return f"top1 {row['top1']:.4f} top3 {row['top3']:.4f} loss {row['loss']:.3f}"


def _round_row(server_round: int, scores: dict, stats: dict, user_eps: float, device_bound: float) -> dict:
    """One line of rounds.jsonl: held-out scores, epsilons, participation and the devices' statistics as
    means over the round's devices (decrypted as one aggregate under HE), never one device's value."""
    return {
        "round": server_round,
        "top1": scores["top1"],
        "top3": scores["top3"],
        "loss": scores["loss"],
        "perplexity": scores["perplexity"],
        "user_epsilon": _finite(user_eps),
        "max_device_epsilon": _finite(device_bound),  # example level, bound over any device (public config)
        "participants": int(stats.get("participants", 0)),
        "dropouts": int(stats.get("dropouts", 0)),
        "devices": stats.get("devices", []),
        "train_loss": _finite(float(stats.get("train-loss", float("nan")))),
        "delta_norm": _finite(float(stats.get("delta-norm", float("nan")))),
        "clipped_fraction": _finite(float(stats.get("clipped", float("nan")))),
        "example_epsilon_mean": _finite(float(stats.get("example-epsilon", float("nan")))),
        "num_examples_mean": _finite(float(stats.get("num-examples", float("nan")))),
        "clip": stats.get("clip"),
        "unclipped_fraction": stats.get("unclipped_fraction"),
        "failures": stats.get("failures", [])[:10],
        "seconds": float(stats.get("seconds", 0.0)),  # sampling to aggregation (training + transport + sum)
    }


class RunData(Protocol):
    """What the aggregator needs of the run's dataset (the runner loads it; the server never reads text)."""

    vocab: Any  # models.vocab.Vocabulary: words, unk_id
    heldout: Examples  # every held-out user's windows
    heldout_users: list  # for the model card's count


class RoundScorer:
    """Flower's ``evaluate_fn``: scores round t's model when due, records its row (and checkpoint), logs
    it, and aborts a run whose rounds keep failing (abort.json, ``FederationAborted``)."""

    def __init__(
        self,
        config: FederationConfig,
        model: torch.nn.Module,
        eval_set: Examples,
        unk_id: int,
        accounting: RoundAccounting,
        recorder: RunRecorder,
        strategy: DeltaAggregation,
        offset: int,
        average: IterateAverage | None = None,
    ) -> None:
        self.config, self.eval_set, self.unk_id = config, eval_set, unk_id
        self.average = average  # server_ema: scores and the release are this average of the iterates
        self.accounting, self.recorder, self.strategy = accounting, recorder, strategy
        self.offset = offset  # rounds done before a resume: Flower counts from 0 again
        self.model = model  # evaluation only
        self.progress = tqdm(
            total=config.rounds, initial=offset, desc="rounds", unit="round", dynamic_ncols=True
        )

    def __call__(self, flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.offset and flower_round == 0:  # the resumed checkpoint: its row is already recorded
            return None
        server_round = self.offset + flower_round
        weights = arrays_to_numpy(arrays)
        if self.average is not None and server_round > 0:
            self.average.update(weights)
        scores = UNSCORED
        if eval_due(self.config, server_round):
            scored = self.released(weights)
            scores = evaluate(load_weights(self.model, merge_lora(scored)), self.eval_set, unk_id=self.unk_id)
        self.record(server_round, scores, weights)
        self.abort_if_failing(server_round)
        if scores is UNSCORED:
            return None
        return MetricRecord({"top1": scores["top1"], "top3": scores["top3"], "loss": scores["loss"]})

    def record(self, server_round: int, scores: dict, weights: dict[str, np.ndarray]) -> None:
        """The round's row in rounds.jsonl (and checkpoint), the progress bar and the round's log line."""
        config = self.config
        stats = self.accounting.stats.get(server_round, {})
        device_bound = example_epsilon_bound(config, server_round)  # public: no device's own value
        row = _round_row(server_round, scores, stats, self.accounting.accountant.user_epsilon(), device_bound)
        average = self.average.to_arrays() if self.average is not None else {}
        state = {**self.strategy.optimizer_state(), **average}
        self.recorder.record(row, weights, final=server_round == config.rounds, state=state)
        if server_round > 0:
            self.progress.update(1)
        log(
            INFO,
            "round %d/%d: %s | user eps %s | %d answered, %d dropouts | C %s",
            server_round,
            config.rounds,
            _scores_text(row),
            row["user_epsilon"],
            row["participants"],
            row["dropouts"],
            row["clip"],
        )

    def abort_if_failing(self, server_round: int) -> None:
        """After ``abort_after_failed_rounds`` failed rounds in a row: abort.json, ``FederationAborted``."""
        if self.accounting.failed_in_a_row < self.config.abort_after_failed_rounds:
            return
        stats = self.accounting.stats.get(server_round, {})
        reason = abort_reason(self.config, server_round, stats)
        record = {"round": server_round, "reason": reason, "failures": stats.get("failures", [])}
        (self.recorder.run_dir / "abort.json").write_text(json.dumps(record), encoding="utf-8")
        raise FederationAborted(reason)

    def released(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the run scores and releases: the iterate average once it has one, else ``weights``."""
        return self.average.value() if self.average is not None and self.average.count else weights

    def close(self) -> None:
        self.progress.close()


def _resume(
    config: FederationConfig, accounting: RoundAccounting, w0: dict[str, np.ndarray]
) -> tuple[list[dict], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A restarted server's rows, weights and optimizer state (charged to the accountant again); a new
    run's: none, ``w0`` and none."""
    if not config.resume:
        return [], w0, {}
    kept_rows, weights, optimizer_state = resume_point(config)
    accounting.replay(kept_rows)
    log(INFO, "resuming %s after round %d of %d", config.run_dir, kept_rows[-1]["round"], config.rounds)
    return kept_rows, weights, optimizer_state


def _open_run(config: FederationConfig, offset: int, kept_rows: list[dict]) -> tuple[str, RunRecorder]:
    """The run id (a resumed run keeps its own) and the recorder; writes run.json, clears abort.json."""
    run_file = Path(config.run_dir) / "run.json"
    run_id = json.loads(run_file.read_text(encoding="utf-8"))["run_id"] if offset else uuid.uuid4().hex
    recorder = RunRecorder(config.run_dir, checkpoint_every=config.checkpoint_every, kept_rows=kept_rows)
    (recorder.run_dir / "abort.json").unlink(missing_ok=True)
    run_record = {"run_id": run_id, "config_hash": config.config_hash(), "config": asdict(config)}
    run_file.write_text(json.dumps(run_record, default=list), encoding="utf-8")
    return run_id, recorder


def _train_config(config: FederationConfig, run_id: str) -> ConfigRecord:
    """What every sampled device is told each round besides the weights."""
    return ConfigRecord(
        {
            "lr": config.lr,
            "local-epochs": config.local_epochs,
            "fail-partitions": ",".join(str(p) for p in config.fail_partitions),
            "drop-probability": config.drop_probability,
            "run-id": run_id,  # devices keep their privacy ledgers per run
        }
    )


def _enrol_devices(grid: Grid, config: FederationConfig, strategy: DeltaAggregation) -> None:
    """The roll call, with the codec (and the HE public context) riding along: the strategy learns each
    node's device id (and, unless ``device_sampling="uniform"``, its window count)."""
    enrol = ConfigRecord()
    strategy.rounds_setup.mean_update.configure(enrol)
    answers = roll_call(
        grid,
        expected=config.devices,
        connect_timeout=min(config.round_timeout, 60.0),
        reply_timeout=config.round_timeout,
        enrol=enrol,
    )
    strategy.device_ids = {node: answer["partition-id"] for node, answer in answers.items()}
    strategy.device_windows = {
        node: answer["windows"] for node, answer in answers.items() if "windows" in answer
    }
    _check_nodes(grid, config, strategy)


def _log_start(config: FederationConfig, noise: NoisePlan, provenance: str, run_dir: Path) -> None:
    log(
        INFO,
        "hushtype federation: N=%d, m=%d (q=%.3f), T=%d, %s eta=%g, C=%g%s, sigma=%.4f, delta=%.2e, %s; %s",
        config.devices,
        config.devices_per_round,
        config.sample_rate,
        config.rounds,
        config.server_optimizer,
        config.server_lr,
        config.clip,
        " (adaptive)" if config.adaptive_clip else "",
        noise.sigma,
        config.user_delta,
        provenance,
        run_dir.resolve(),
    )


def run_federation(grid: Grid, config: FederationConfig, data: RunData) -> dict:
    """The whole server-side job; returns the model card it wrote."""
    start = time.perf_counter()
    w0, model_config, provenance = initial_weights(config, data.vocab.words)
    w0 = {**w0, **adapter_weights(config, model_config)}
    eval_set = heldout_sample(data.heldout, config.eval_max_examples, config.seed)
    model = fuse_lstm(build_model(model_config))  # evaluation only: torch's fused LSTM, ~4x faster
    noise = calibrate_noise(config)
    accountant = UserLevelAccountant(delta=config.user_delta, accountant=config.accountant)
    accounting = RoundAccounting(config, noise, accountant)
    kept_rows, w0, optimizer_state = _resume(config, accounting, w0)
    average = IterateAverage.from_arrays(config.server_ema, optimizer_state) if config.server_ema else None
    offset = kept_rows[-1]["round"] if kept_rows else 0
    run_id, recorder = _open_run(config, offset, kept_rows)

    with key_authority(config) as authority:
        strategy = build_strategy(config, noise, authority)
        strategy.on_round = accounting
        if offset:
            strategy.resume_after(offset, config.devices)
            strategy.load_optimizer_state(optimizer_state)
        _enrol_devices(grid, config, strategy)
        _log_start(config, noise, provenance, recorder.run_dir)
        scorer = RoundScorer(
            config, model, eval_set, data.vocab.unk_id, accounting, recorder, strategy, offset, average
        )
        try:
            result = strategy.start(
                grid=grid,
                initial_arrays=numpy_to_arrays(w0),
                num_rounds=config.rounds - offset,
                timeout=config.round_timeout,
                train_config=_train_config(config, run_id),
                evaluate_fn=scorer,
            )
        finally:
            scorer.close()
    final = scorer.released(arrays_to_numpy(result.arrays) if len(result.arrays) else w0)
    run = {
        "rows": recorder.rows,
        "noise": noise,
        "accountant": accountant,
        "provenance": provenance,
        "heldout_windows": len(eval_set),
        "heldout_users": len(data.heldout_users),
        "seconds": time.perf_counter() - start,
    }
    card = _model_card(config, run)
    return write_release(config, recorder, merge_lora(final), model_config, data.vocab, card)


LoadData = Callable[[FederationConfig], RunData]


def _check_nodes(grid: Grid, config: FederationConfig, strategy: DeltaAggregation) -> None:
    """Warn when the federation is sized unlike ``devices`` or nodes did not name their device id."""
    nodes = len(list(grid.get_node_ids()))
    if nodes != config.devices:  # simulation: a sizing mistake; deployment: devices may still connect
        log(
            WARNING,
            "the federation has %d SuperNodes connected but devices=%d (one SuperNode = one device); "
            "for `flwr run .` set num-supernodes=%d (scripts/flwr-run does)",
            nodes,
            config.devices,
            config.devices,
        )
    if len(strategy.device_ids) < nodes:
        log(WARNING, "roll call: %d of %d SuperNodes named their device id", len(strategy.device_ids), nodes)


def make_server_app(load_data: LoadData, config: FederationConfig | None = None) -> ServerApp:
    """A ServerApp bound to ``config`` (or ``context.run_config`` when None) reading data with ``load_data``.

    ``load_data`` comes from the runner (``hushtype.simulation``, ``hushtype.flwr_apps``): the server
    package never imports the device package that knows corpora.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = config if config is not None else FederationConfig.from_run_config(dict(context.run_config))
        random.seed(cfg.seed)
        run_federation(grid, cfg, load_data(cfg))

    return server_app
