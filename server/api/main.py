"""The prediction API: ``create_app`` only wires settings, state, error handling and routers.

Run with ``hushtype serve`` (uvicorn). OpenAPI docs at ``/docs``; byte formats in docs/wire-format.md.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.release import load_release
from server.api.admission import RateLimiter
from server.api.config import Settings
from server.api.dependencies import default_settings
from server.api.errors import install_error_handlers
from server.api.he_service import HEService
from server.api.metrics import APIMetrics
from server.api.openapi import install_openapi
from server.api.release_policy import check_servable
from server.api.routers import baseline, health, model, sessions, users
from server.api.store import open_store

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving the release in ``settings.release_dir`` on encrypted input.

    Start-up raises ``NonPrivateRelease`` for a release without user-level DP unless
    ``settings.allow_non_private``.
    """
    settings = settings or default_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.release = load_release(settings.release_dir)
        app.state.privacy = check_servable(
            app.state.release.card, settings.release_dir, settings.allow_non_private
        )
        app.state.metrics = APIMetrics()
        app.state.session_limiter = RateLimiter(
            settings.session_create_per_minute, settings.session_create_burst
        )
        app.state.store = open_store(
            settings.store_location(),
            idle_ttl_seconds=settings.session_idle_ttl_seconds,
            max_sessions=settings.max_sessions,
        )
        app.state.he = HEService(
            settings.release_dir,
            settings.workers,
            settings.he_mode,
            request_timeout=settings.he_request_timeout_seconds,
            queue_timeout=settings.he_queue_timeout_seconds,
            on_restart=app.state.metrics.worker_restarts.inc,
        )
        try:
            await app.state.he.start()
            yield
        finally:
            app.state.he.close()
            app.state.store.close()

    app = FastAPI(title="hushtype encrypted prediction API", version="1", lifespan=lifespan)
    install_error_handlers(app)
    install_openapi(app, settings)
    app.include_router(sessions.router)
    app.include_router(users.router)
    app.include_router(model.router)
    app.include_router(health.router)
    if settings.plaintext_baseline:
        app.include_router(baseline.router)
    return app
