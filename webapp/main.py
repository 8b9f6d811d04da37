"""The application factory: lifespan-owned clients, routers, middleware and error handlers."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from webapp import __version__
from webapp.base.metrics import Metrics
from webapp.base.processes import stop_task
from webapp.config import Settings, get_settings
from webapp.core.limits import Limit
from webapp.core.services import build_services
from webapp.llm.providers import Provider, create_provider
from webapp.storage.migrate import migrate_layout
from webapp.storage.redis_checks import check_redis
from webapp.storage.redis_client import connect_store
from webapp.web.csrf import require_csrf_token
from webapp.web.edge import Edge
from webapp.web.error_handlers import install_error_handlers
from webapp.web.peers import TrustedProxies, is_internal
from webapp.web.render import compile_all
from webapp.web.routes import admin, api, auth, files, pages, roles, sharing, shelves, stream, transfer, usage
from webapp.web.routes.plain import PLAIN_ROUTES
from webapp.web.routes.transfer import IMPORT_PATHS
from webapp.web.sse import SERVER_SEND

ROOT = Path(__file__).resolve().parent.parent
HOST_ID = f"{socket.gethostname()}:{os.getpid()}"  # /readyz's own key: hosts never share one
log = logging.getLogger("webapp")


_gc_tuned = False


def tune_garbage_collection() -> None:
    """Keep the collector's pauses short while hundreds of streams allocate.

    The imported libraries (FastAPI, pydantic, aiohttp) leave ~150k objects
    that every full collection walks again: gc.freeze() moves them where the collector
    never looks. And at the default threshold (a young collection every 700
    allocations) a 500-stream run spent ~15% of the app's CPU in the collector; a
    young generation of 50,000 lets most short-lived objects die by reference
    counting first, for ~3% (bench/README.md). Cycles are still collected, only less often.
    Once per process: the app's own objects exist by then, and a second app in the same
    process (tests) must not freeze the first one's garbage.
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def warm_up(provider: Provider) -> None:
    """In a worker thread once serving has begun: compile the templates and load the model SDK,
    which the first requests would otherwise do on the event loop (start-up stays as short)."""
    try:
        compile_all()
        provider.preload()
    except Exception:  # the requests that need them load them then, as before
        log.exception("warm-up failed")


def bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def ops_refusal(request: Request, token: str) -> Response | None:
    """/metrics and /readyz?upstream=1: with a token, only `Authorization: Bearer <token>`; without one,
    only this machine and the trusted proxies (peers.is_internal). None: allowed."""
    if token:
        return None if bearer_matches(request, token) else PlainTextResponse("unauthorized", status_code=401)
    if is_internal(request):
        return None
    return PlainTextResponse("forbidden: set METRICS_TOKEN to reach this from elsewhere", status_code=403)


def configure_logging(level: str) -> None:
    """key=value lines on stderr; also in uvicorn's worker processes, which start unconfigured."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("webapp").setLevel(level.upper())
    # what no line of ours shows, not gathered per record (the logging HOWTO's "Optimization"): the
    # caller's file and line is a walk of the stack for each access-log line of every request
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


class ChatApp(FastAPI):
    """The app: FastAPI, noting the server's `send` in each request's scope for the streams (web/sse.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await connect_store(settings)
        try:
            await check_redis(store, settings)
            await migrate_layout(store)
            if settings.admin_users:  # (accounts made before the admin directory: listed once)
                await store.fill_directory()
        # started before Redis (a Cluster not up yet says so with its own exception): /readyz tells
        except (RedisConnectionError, RedisTimeoutError, RedisClusterException) as exc:
            log.error("Redis is not reachable (%s); the key layout check runs at the next start", exc)
        except BaseException:
            await store.aclose()
            raise
        provider = create_provider(settings)
        services = build_services(store, provider, settings, app.state.metrics)
        state = app.state
        state.store, state.provider, state.limits = store, provider, services.limits
        state.turn_writer, state.turn_reader = services.writer, services.reader
        state.conversations, state.accounts = services.conversations, services.accounts
        state.portability = services.portability
        state.roles, state.shares, state.channels = services.roles, services.shares, services.channels
        state.revocations, state.quota = services.revocations, services.quota
        state.spending, state.admin = services.spending, services.admin
        state.uploads = services.uploads
        services.start()
        app.state.metrics.redis_round_trips.set_function(store.round_trips)
        tune_garbage_collection()
        if settings.slow_callback_ms:  # (bench.attachments: which step holds the loop, and how long)
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = settings.slow_callback_ms / 1000
        warming = asyncio.create_task(asyncio.to_thread(warm_up, provider), name="warm-up")
        log.info(
            "ready: model=%s provider=%s redis=%s%s", provider.model, provider.name,
            settings.redis_url.split("@")[-1] or settings.redis_sentinels, " (cluster)" if store.cluster else "",
        )
        try:
            yield
        finally:
            await stop_task(warming)
            await services.aclose()

    docs = settings.api_docs_on
    app = ChatApp(
        title="Chat server",
        # the API's map: on where anyone may use the app anyway (AUTH=anonymous), else asked for (API_DOCS)
        docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        description="Multi-turn AI chat with streamed, durable replies (OpenAI-compatible models, Redis).",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look for a configured provider on every request; the app's
        # metrics are its own (/metrics, Prometheus) and nothing here sets up OpenTelemetry
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.trusted_proxies = TrustedProxies(settings.forwarded_allow_ips)
    app.state.new_identity_limit = Limit("identities-ip", settings.new_identities_per_ip_per_hour, 3600)
    # one layer for what every request goes through (peer, proxy headers, access log, security headers,
    # input guard, identity cookie), in that order; see edge.py
    app.add_middleware(Edge, metrics=app.state.metrics, log_requests=settings.access_log,
                       trusted_hosts=settings.forwarded_allow_ips, secret=settings.secret_key,
                       max_body_bytes=settings.max_body_bytes,
                       upload_bytes=settings.max_attachments * settings.max_attachment_bytes + settings.max_body_bytes,
                       larger_bodies=dict.fromkeys(IMPORT_PATHS, settings.max_import_bytes))

    install_error_handlers(app, app.state.metrics)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> Response:
        """Liveness, plus a Redis ping (the app is useless without it)."""
        ok = await request.app.state.store.ping()
        return JSONResponse({"status": "ok" if ok else "redis unavailable"}, status_code=200 if ok else 503)

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request, upstream: bool = False) -> Response:
        """Readiness: Redis, and with `?upstream=1` the model endpoint too (a call that may cost: guarded as
        /metrics is, by READYZ_TOKEN or METRICS_TOKEN, else only for this machine and the trusted proxies)."""
        if upstream and (refusal := ops_refusal(request, settings.readyz_token or settings.metrics_token)):
            return refusal
        checks = {"redis": await request.app.state.store.check_write(HOST_ID)}
        if upstream:
            checks["upstream"] = await request.app.state.provider.ping()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not settings.metrics_enabled:
            return PlainTextResponse("metrics are disabled", status_code=404)
        if refusal := ops_refusal(request, settings.metrics_token):
            return refusal
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    # cross-site requests are refused by the input guard (edge.py), for every route. The routes of
    # every turn first, as the router tries them in order: the plain ones (routes/plain.py: matched
    # and served by Starlette's rules, no dependency solving), then the API's
    app.router.routes[:0] = PLAIN_ROUTES
    app.include_router(stream.router)
    app.include_router(api.router)
    app.include_router(auth.router)  # before a sign-in there is no CSRF token to check
    for module in (roles, sharing, transfer, usage, admin, shelves):
        app.include_router(module.api_router)
        app.include_router(module.page_router, dependencies=[Depends(require_csrf_token)])
    app.include_router(files.api_router)  # (cross-site posts are refused at the edge, as for every API route)
    app.include_router(files.page_router)  # (GET only)
    app.include_router(sharing.shared_router)  # read-only links: no identity, no forms
    app.include_router(pages.router, dependencies=[Depends(require_csrf_token)])
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app
