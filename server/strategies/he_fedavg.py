"""FedAvg(M) over CKKS-encrypted device deltas: ``DeltaFedAvgM`` with ``HEMean``.

Kept as the name tests and older code use; the sum under CKKS and the key authority's decryption live
in ``server.strategies.he_mean``, the optimizer is Flower's FedAvgM (``server.strategies.optimizers``).
"""

from __future__ import annotations

from server.strategies.delta_aggregation import RoundSetup
from server.strategies.he_mean import HEMean, KeyAuthorityLike
from server.strategies.optimizers import DeltaFedAvgM

__all__ = ["HEFedAvg", "KeyAuthorityLike"]


class HEFedAvg(DeltaFedAvgM):
    """FedAvgM whose mean delta is the key authority's decryption of the homomorphic sum."""

    def __init__(
        self,
        *,
        key_authority: KeyAuthorityLike,
        devices_per_round: int,
        public_context_path: str | None = None,
        he_weight_unit: float = 100.0,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        weighting: str = "uniform",
        min_available_nodes: int = 2,
        seed: int = 0,
    ) -> None:
        mean = HEMean(
            key_authority=key_authority,
            devices_per_round=devices_per_round,
            weighting=weighting,
            public_context_path=public_context_path,
            he_weight_unit=he_weight_unit,
        )
        setup = RoundSetup(mean_update=mean, devices_per_round=devices_per_round, seed=seed)
        super().__init__(
            setup,
            server_lr=server_lr,
            server_momentum=server_momentum,
            min_available_nodes=min_available_nodes,
        )
        self.weighting = weighting
        self.key_authority = key_authority
        self.public_context = mean.public_context
