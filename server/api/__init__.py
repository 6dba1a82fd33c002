"""The encrypted prediction API (FastAPI): ``create_app`` wires the routers."""

from server.api.main import create_app

__all__ = ["create_app"]
