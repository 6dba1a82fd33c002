"""The shared description of a federated run (see ``federation.config``)."""

from federation.config import EXAMPLE_RDP_ORDERS, FederationConfig

__all__ = ["EXAMPLE_RDP_ORDERS", "FederationConfig"]
