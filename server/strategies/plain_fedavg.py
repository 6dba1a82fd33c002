"""FedAvg(M) over device deltas in the clear: ``DeltaFedAvgM`` with ``PlainMean``.

Kept as the name tests and older code use; the algorithm lives in ``server.strategies.optimizers``
(Flower's FedAvgM) and ``server.strategies.delta_aggregation``. Nothing is encrypted: the aggregator
sees every device's update.
"""

from __future__ import annotations

from server.strategies.delta_aggregation import RoundSetup, arrays_to_numpy, numpy_to_arrays
from server.strategies.mean_update import PLAIN_STYPE, PlainMean
from server.strategies.optimizers import DeltaFedAvgM

__all__ = ["PlainFedAvg", "PLAIN_STYPE", "arrays_to_numpy", "numpy_to_arrays"]


class PlainFedAvg(DeltaFedAvgM):
    """FedAvgM over plain deltas: w_{t+1} = w_t + eta_s v_t, v_t = beta v_{t-1} + Delta_t."""

    def __init__(
        self,
        *,
        devices_per_round: int,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        weighting: str = "uniform",
        min_available_nodes: int = 2,
        seed: int = 0,
    ) -> None:
        setup = RoundSetup(
            mean_update=PlainMean(weighting=weighting), devices_per_round=devices_per_round, seed=seed
        )
        super().__init__(
            setup,
            server_lr=server_lr,
            server_momentum=server_momentum,
            min_available_nodes=min_available_nodes,
        )
        self.weighting = weighting
