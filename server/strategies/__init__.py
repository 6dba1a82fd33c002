"""Aggregation strategies: Flower's server optimizers over plain or CKKS-encrypted device deltas."""

from __future__ import annotations

from server.strategies.adaptive_clipping import QuantileClip, update_noise_multiplier
from server.strategies.delta_aggregation import DeltaAggregation, RoundSetup
from server.strategies.mean_update import MeanUpdate, PlainMean
from server.strategies.optimizers import (
    SERVER_OPTIMIZERS,
    DeltaFedAdam,
    DeltaFedAvgM,
    DeltaFedYogi,
    make_strategy,
)
from server.strategies.plain_fedavg import PlainFedAvg

__all__ = [
    "DeltaAggregation",
    "DeltaFedAdam",
    "DeltaFedAvgM",
    "DeltaFedYogi",
    "MeanUpdate",
    "PlainFedAvg",
    "PlainMean",
    "QuantileClip",
    "RoundSetup",
    "SERVER_OPTIMIZERS",
    "make_strategy",
    "update_noise_multiplier",
]
