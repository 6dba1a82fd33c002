"""The shared description of a federated run (see ``federation.config``)."""

from federation.config import FederationConfig

__all__ = ["FederationConfig"]
