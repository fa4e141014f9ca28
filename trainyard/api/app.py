"""The HTTP API: `create_app(settings)` builds everything; nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from trainyard.api import (
    routes_costs,
    routes_grants,
    routes_jobs,
    routes_logs,
    routes_outputs,
    routes_queue,
    routes_scheduling,
)
from trainyard.api.deps import PrincipalDep
from trainyard.api.errors import error_response, install_error_handlers
from trainyard.api.hygiene import refuse_bad_text
from trainyard.api.json_bodies import JsonBodies
from trainyard.api.metrics import LatencyMiddleware, make_registry
from trainyard.api.openai import models as routes_models
from trainyard.api.openai import routes as routes_openai
from trainyard.api.openapi import install_openapi
from trainyard.api.spend_metrics import register_spend_metrics
from trainyard.platform import auth, db, migrate
from trainyard.platform.deployment import Deployment, load_deployment
from trainyard.platform.planning import Planner
from trainyard.platform.sources import SourcePolicy
from trainyard.settings import Settings, get_settings


def create_app(settings: Settings | None = None, deployment: Deployment | None = None) -> FastAPI:
    """The API for `settings`; a process that also runs a worker (the embedded stack) passes the
    deployment it already built, so both read one catalog, one set of pools and one cache."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        if settings.migrate_on_start:
            migrate.upgrade(engine)
        app.state.engine = engine
        app.state.sessionmaker = db.make_sessionmaker(engine)
        app.state.registry, latency = make_registry(app.state.sessionmaker)
        app.state.latency = latency
        register_spend_metrics(app.state.registry, app.state.sessionmaker)
        try:
            yield
        finally:
            engine.dispose()

    # Every route refuses text the platform cannot store before it reads any (api.hygiene).
    app = FastAPI(
        title="Trainyard", version="0.1.0", lifespan=lifespan, dependencies=[Depends(refuse_bad_text)]
    )
    app.state.settings = settings
    # Load the catalog and pools when the app is built, so a bad file stops start-up loudly.
    app.state.deployment = deployment or load_deployment(settings)
    app.state.planner = Planner(app.state.deployment)
    app.state.sources = SourcePolicy.from_settings(settings)
    install_error_handlers(app)
    install_openapi(app)

    app.add_middleware(LatencyMiddleware)

    # Inside the size limit (middleware added later wraps what came before), so it buffers at
    # most a body the limit lets through.
    app.add_middleware(JsonBodies, skip_paths=(routes_openai.FILES_PATH,))
    app.add_middleware(
        routes_openai.BodySizeLimitWithUploads,
        max_bytes=settings.max_body_bytes,
        upload_max_bytes=routes_openai.upload_body_limit(settings),
    )
    app.include_router(routes_jobs.router)
    app.include_router(routes_logs.router)
    app.include_router(routes_queue.router)
    app.include_router(routes_outputs.router)
    app.include_router(routes_scheduling.router)
    app.include_router(routes_costs.router)
    app.include_router(routes_grants.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_models.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        try:
            with request.app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            # Retry-After as every other 503 answers, so probes and the SDK back off alike.
            message = f"database check failed: {type(exc).__name__}"
            return error_response(503, "database_unavailable", message, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request, principal: PrincipalDep) -> Response:
        # Spend and budgets name every team: admin keys only (Prometheus sends one, see README).
        auth.require_admin(principal)
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    return app
