"""Server optimizers over (possibly encrypted) device deltas: Flower's own, fed by ``DeltaAggregation``.

Reddi et al. 2021, "Adaptive Federated Optimization" (arXiv:2003.00295). The update rules are
Flower's (``flwr.serverapp.strategy.FedAvgM``, ``FedAdam``, ``FedYogi``), untouched; each class here
only puts ``DeltaAggregation`` under them, so the pseudo-gradient they step on is the round's mean
delta Delta_t, formed in the clear (``PlainMean``) or by the key authority decrypting the CKKS sum
(``HEMean``). With eta = server learning rate::

    fedavg    w_{t+1} = w_t + Delta_t
    fedavgm   v_t = beta v_{t-1} + Delta_t;   w_{t+1} = w_t + eta v_t
    fedadam   m_t = b1 m_{t-1} + (1 - b1) Delta_t;  v_t = b2 v_{t-1} + (1 - b2) Delta_t^2
              w_{t+1} = w_t + eta_hat_t m_t / (sqrt(v_t) + tau)     (bias-corrected eta, Kingma & Ba)
    fedyogi   as fedadam with v_t = v_{t-1} - (1 - b2) Delta_t^2 sign(v_{t-1} - Delta_t^2)

``make_strategy(optimizer, mean_update=..., ...)`` builds one by name. ``ScheduledLR`` (under
``RunRounds``, so it sees the run's round) scales eta at round t by ``federation.schedule.lr_factor``
(``lr_schedule`` "cos" / "lin" over ``rounds``): a server-side schedule, no privacy cost.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvgM, FedYogi

from federation.schedule import lr_factor
from server.strategies.delta_aggregation import DeltaAggregation, RoundSetup, RunRounds

__all__ = [
    "DeltaFedAvgM",
    "DeltaFedAdam",
    "DeltaFedYogi",
    "SERVER_OPTIMIZERS",
    "ScheduledLR",
    "make_strategy",
]


def _flower_kwargs(setup: RoundSetup, min_available_nodes: int) -> dict:
    m = setup.devices_per_round
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,  # evaluation is server-side, on held-out users
        "min_train_nodes": m,
        "min_available_nodes": max(min_available_nodes, m),
    }


class ScheduledLR:
    """Put after ``RunRounds`` in a strategy's bases: eta at the run's round t is the base eta times
    ``lr_factor(kind, t, rounds, floor)`` (Flower's update rule reads the attribute ``lr_attr``)."""

    lr_attr = "eta"  # FedAdam / FedYogi; FedAvgM: "server_learning_rate"
    lr_plan: tuple[str, int, float, float] | None = None  # (kind, rounds, floor, base eta)

    def schedule_lr(self, kind: str, rounds: int, floor: float = 0.0) -> None:
        """Decay eta over ``rounds`` (``kind`` "none" | "cos" | "lin", to ``floor`` x eta)."""
        lr_factor(kind, 1, rounds, floor)  # an unknown kind raises here, before any round
        self.lr_plan = (kind, rounds, floor, getattr(self, self.lr_attr))

    def aggregate_train(self, server_round, replies):  # noqa: ANN001, ANN201 - as Strategy
        if self.lr_plan is not None:
            kind, rounds, floor, base = self.lr_plan
            setattr(self, self.lr_attr, base * lr_factor(kind, server_round, rounds, floor))
        return super().aggregate_train(server_round, replies)


class DeltaFedAvgM(RunRounds, ScheduledLR, FedAvgM, DeltaAggregation):
    """FedAvg (eta = 1, beta = 0) or FedAvgM over device deltas (Hsu et al. 2019, arXiv:1909.06335)."""

    lr_attr = "server_learning_rate"

    def __init__(
        self,
        setup: RoundSetup,
        *,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        min_available_nodes: int = 2,
    ) -> None:
        if server_lr <= 0:
            raise ValueError(f"The server learning rate should be positive, got {server_lr}.")
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum}")
        super().__init__(
            **_flower_kwargs(setup, min_available_nodes),
            server_learning_rate=server_lr,
            server_momentum=server_momentum,
        )
        self.setup_rounds(setup)


class _AdaptiveInit:
    """The constructor FedAdam and FedYogi share (Flower gives both the same arguments)."""

    def __init__(
        self,
        setup: RoundSetup,
        *,
        server_lr: float = 1e-2,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        min_available_nodes: int = 2,
    ) -> None:
        if server_lr <= 0:
            raise ValueError(f"The server learning rate should be positive, got {server_lr}.")
        super().__init__(
            **_flower_kwargs(setup, min_available_nodes), eta=server_lr, beta_1=beta_1, beta_2=beta_2, tau=tau
        )
        self.setup_rounds(setup)


class DeltaFedAdam(_AdaptiveInit, RunRounds, ScheduledLR, FedAdam, DeltaAggregation):
    """FedAdam over device deltas (Reddi et al. 2021, Algorithm 2)."""


class DeltaFedYogi(_AdaptiveInit, RunRounds, ScheduledLR, FedYogi, DeltaAggregation):
    """FedYogi over device deltas (Reddi et al. 2021, Algorithm 2, Yogi second moment)."""


SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")


def make_strategy(
    optimizer: str,
    setup: RoundSetup,
    *,
    server_lr: float,
    server_momentum: float = 0.0,
    beta_2: float = 0.99,
    tau: float = 1e-3,
    min_available_nodes: int = 2,
    lr_schedule: tuple[str, int, float] = ("none", 1, 0.0),
) -> DeltaAggregation:
    """The strategy for ``optimizer`` ("fedavg" | "fedavgm" | "fedadam" | "fedyogi").

    ``server_momentum`` is FedAvgM's beta and FedAdam/FedYogi's beta_1; ``lr_schedule`` (kind, rounds,
    floor) decays eta over the run (``ScheduledLR``; FedAvg's eta is 1 and is not scheduled).
    """
    strategy = _optimizer(optimizer, setup, server_lr, server_momentum, beta_2, tau, min_available_nodes)
    if optimizer != "fedavg":
        strategy.schedule_lr(*lr_schedule)
    return strategy


def _optimizer(
    optimizer: str,
    setup: RoundSetup,
    server_lr: float,
    server_momentum: float,
    beta_2: float,
    tau: float,
    min_available_nodes: int,
) -> DeltaAggregation:
    """``make_strategy`` without the schedule."""
    if optimizer == "fedavg":
        return DeltaFedAvgM(
            setup, server_lr=1.0, server_momentum=0.0, min_available_nodes=min_available_nodes
        )
    if optimizer == "fedavgm":
        return DeltaFedAvgM(
            setup,
            server_lr=server_lr,
            server_momentum=server_momentum,
            min_available_nodes=min_available_nodes,
        )
    if optimizer in ("fedadam", "fedyogi"):
        cls = DeltaFedAdam if optimizer == "fedadam" else DeltaFedYogi
        return cls(
            setup,
            server_lr=server_lr,
            beta_1=server_momentum,
            beta_2=beta_2,
            tau=tau,
            min_available_nodes=min_available_nodes,
        )
    raise ValueError(f"server optimizer must be one of {SERVER_OPTIMIZERS}, got {optimizer!r}")
