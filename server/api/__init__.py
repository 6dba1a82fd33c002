"""The encrypted prediction API (FastAPI): ``create_app`` wires the routers.

``create_app`` is imported lazily, so the HE worker processes, which import ``server.api.he_service``,
do not pay for FastAPI and torch at start-up (a replaced worker is back in about a second).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from server.api.main import create_app

        return create_app
    raise AttributeError(f"module 'server.api' has no attribute {name!r}")
