"""The prediction API: ``create_app`` only wires settings, state and routers.

Run with ``hushtype serve`` (uvicorn). OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.release import load_release
from server.api.config import Settings
from server.api.dependencies import default_settings
from server.api.he_service import HEService
from server.api.metrics import APIMetrics
from server.api.routers import baseline, health, model, sessions
from server.api.store import open_store

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving the release in ``settings.release_dir`` on encrypted input."""
    settings = settings or default_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.release = load_release(settings.release_dir)
        app.state.store = open_store(
            settings.store_location(),
            idle_ttl_seconds=settings.session_idle_ttl_seconds,
            max_sessions=settings.max_sessions,
        )
        app.state.metrics = APIMetrics()
        app.state.he = HEService(
            settings.release_dir, settings.store_location(), settings.workers, settings.he_mode
        )
        await app.state.he.start()
        try:
            yield
        finally:
            app.state.he.close()
            app.state.store.close()

    app = FastAPI(
        title="hushtype encrypted prediction API",
        version="1",
        description="Next-word suggestions computed on CKKS ciphertexts; the server never sees the text.",
        lifespan=lifespan,
    )
    app.include_router(sessions.router)
    app.include_router(model.router)
    app.include_router(health.router)
    if settings.plaintext_baseline:
        app.include_router(baseline.router)
    return app
