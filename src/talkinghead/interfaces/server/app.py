"""The app factory and the runner: `create_app` wires the job service, the stream slots, the error handlers and
the routers; `serve` checks the settings and the address, then runs uvicorn until interrupted."""
from __future__ import annotations

import ipaddress
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import InputError
from ..settings import Settings, make_settings
from .audiofeed import StreamSlots
from .auth import token_dependencies
from .description import api_description
from .errors import ServiceError, error_response
from .jobs import JobService
from .routes import dub_routes, server_routes, video_routes
from .streaming import stream_routes


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for `settings`. Its render threads start with the app (or the first submission);
    shutting the app down cancels every job, stops every stream and deletes the temp folder."""
    from ... import __version__

    settings = (settings or Settings()).validate()
    service = JobService(settings.workers, settings.queue_size, settings.max_jobs, settings.ttl_seconds)
    slots = StreamSlots(settings.max_streams)
    app = FastAPI(title="talkinghead", version=__version__, description=api_description(),
                  lifespan=_lifespan(service, slots))
    app.state.settings, app.state.service, app.state.streams = settings, service, slots
    _add_error_handlers(app)
    auth = token_dependencies(settings.token)
    app.include_router(video_routes(settings, service, auth))
    app.include_router(dub_routes(settings, service, auth))
    app.include_router(server_routes(settings, service, slots, auth))
    app.include_router(stream_routes(settings, slots, service.root))
    return app


def _lifespan(service: JobService, slots: StreamSlots):
    """Start the render threads (again if the app restarts); on shutdown stop streams, cancel jobs, delete files."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.reopen()
        slots.stopping.clear()
        yield
        slots.stop_all()
        await run_in_threadpool(service.close)

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal, ours or FastAPI's, in the one error body."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        """Refusals raised anywhere in a route."""
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own request validation errors (path and query parameters)."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}\n"
                              "  how to fix: see /docs for the expected request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's 404 (no such route) and 405 (wrong method)."""
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{exc.detail}: {request.method} {request.url.path}\n  how to fix: see /docs for the routes"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


def _loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_listen(host: str, port: int) -> None:
    """InputError now, rather than uvicorn's exit later, when `host:port` cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as e:  # port taken, address not on this machine, unknown host name
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                         "choose another port or host address") from None


def serve(log_level: str = "info", **options) -> None:
    """Run the API with uvicorn until interrupted (Ctrl-C: jobs are cancelled, the temp folder deleted).
    `options` are Settings fields (`port=8080`, `max_upload_mb=10`, ...), see `make_settings`.
    Raises InputError for a bad setting or an address it cannot listen on."""
    import importlib.util

    import uvicorn

    settings = make_settings(**options)
    check_listen(settings.host, settings.port)
    ws = "auto" if importlib.util.find_spec("websockets") or importlib.util.find_spec("wsproto") else "none"
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level=log_level, ws=ws,
                            ws_max_size=settings.max_upload_bytes * 4 // 3 + 65536, timeout_graceful_shutdown=10)
    say = logging.getLogger("uvicorn.error")  # configured by uvicorn.Config, so these lines show
    say.info("talkinghead serve: %s", {k: ("***" if k == "token" and v else v) for k, v in asdict(settings).items()})
    if ws == "none":
        say.warning("WS /v1/stream needs the `websockets` package (pip install websockets); streaming is off")
    if not _loopback(settings.host) and not settings.token:
        say.warning("listening on %s without a token: anyone who can reach it can use it (pass --token)", settings.host)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: a normal stop
        pass
