"""Aggregation strategies, one per file; ``make_strategy`` picks one by run-config name."""

from __future__ import annotations

import importlib

from server.strategies.plain_fedavg import PlainFedAvg

__all__ = ["PlainFedAvg", "AGGREGATIONS", "make_strategy"]

# aggregation name -> "module:Class"; "he" is provided by the CKKS work (server/strategies/he_fedavg.py)
AGGREGATIONS = {
    "plain": "server.strategies.plain_fedavg:PlainFedAvg",
    "he": "server.strategies.he_fedavg:HEFedAvg",
}


def make_strategy(aggregation: str, **kwargs) -> PlainFedAvg:
    """Instantiate the strategy registered for ``aggregation`` ("plain" | "he") with ``kwargs``."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {aggregation!r}")
    module_name, class_name = AGGREGATIONS[aggregation].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ValueError(
            f"aggregation={aggregation!r} needs {module_name} ({err}); use aggregation='plain' until it does"
        ) from err
    return getattr(module, class_name)(**kwargs)
