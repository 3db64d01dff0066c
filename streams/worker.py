"""Run one worker role: start clients, run the Faust agents.

``aichat worker --role pipeline`` (see :data:`streams.agents.ROLES`). Beside the
agents the worker serves ``/metrics``, ``/health/live`` and ``/health/ready`` on
``AICHAT_WORKER_WEB_HOST`` (default 127.0.0.1) and ``AICHAT_WORKER_WEB_PORT``.

The worker creates nothing itself: the entry point (``aichat worker``, streams/cli.py)
creates the topics before :func:`run` and hands it the setup steps that create what the
role's clients use (:func:`needs`; infra/provision.py), run before those clients start.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence

import faust
from faust.contrib.asgi import AsgiService, serve_asgi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streams import lag
from streams.agents import ROLES, needs
from streams.app import create_app
from streams.config import WorkerSettings
from streams.elastic_sink import ElasticSink
from streams.embedding import create_embedder
from streams.generation import ExtractiveGenerator
from streams.llm import OpenAIChatGenerator
from streams.models import answer_min_similarity
from streams.niceness import lower_cpu_priority
from streams.resources import AgentContext, Resources, SetupStep, agent_retry
from streams.topics import Topics
from streams.vectorstore import WeaviateStore

log = logging.getLogger(__name__)

def build(
    settings: WorkerSettings, role: str, setup: Sequence[SetupStep] = ()
) -> tuple[faust.App, AgentContext]:
    """The app with the role's agents registered, and their shared context (not started);
    ``setup`` runs before the context's clients start."""
    agents = ROLES[role]
    used = needs(role)
    app = create_app(settings, role)
    ctx = AgentContext(settings=settings, app=app, topics=Topics.declare(app, settings),
                       retry=agent_retry(settings), setup=setup)
    if "model" in used:
        ctx.embedder = create_embedder(settings)
    if "weaviate" in used:
        ctx.store = WeaviateStore(settings)
    if "elasticsearch" in used:
        ctx.sink = ElasticSink(settings)
    if "answerer" in agents and settings.generator == "openai":
        ctx.generator = OpenAIChatGenerator(settings)
    elif "answerer" in agents:
        threshold = settings.answer_min_similarity
        if threshold is None:
            threshold = answer_min_similarity(settings.embed_model)
        ctx.generator = ExtractiveGenerator(min_similarity=threshold)
    for name in agents:
        importlib.import_module(f"streams.agents.{name}").register(app, ctx)
    backlog = lag.register(app, settings)  # aichat_consumer_lag_messages of this role's group
    serve_health(app, ctx, role, settings, backlog)
    return app, ctx


def serve_health(
    app: faust.App, ctx: AgentContext, role: str, settings: WorkerSettings,
    backlog: lag.Backlog | None = None,
) -> type[AsgiService]:
    """Serve :func:`health_app` from the worker's loop once the app is up."""
    return serve_asgi(
        app,
        health_app(ctx, role, backlog),
        host=settings.worker_web_host,
        port=settings.worker_web_port,
        log_config=None,
    )


def health_app(ctx: AgentContext, role: str, backlog: lag.Backlog | None = None) -> Starlette:
    async def live(_: Request) -> Response:
        return JSONResponse({"status": "ok", "role": role})

    async def ready(_: Request) -> Response:
        checks = {"resources": ctx.started.is_set()}
        if ctx.embedder is not None:
            checks["model"] = ctx.embedder.ready
        if ctx.sink is not None:  # red while Elasticsearch refuses our credentials
            checks["elasticsearch"] = ctx.sink.refusing is None
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ok" if ok else "unavailable", "role": role, "checks": checks}
        # records of the consumed topics still to process: a busy worker is still ready
        summary = None if backlog is None else backlog.summary()
        if backlog is not None and summary is not None:
            body["busy"] = backlog.busy
            body["backlog"] = summary
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health/live", live),
            Route("/health/ready", ready),
            Route("/metrics", metrics),
        ]
    )


def run(settings: WorkerSettings, role: str, setup: Sequence[SetupStep] = ()) -> int:
    """Blocking: runs until SIGTERM/SIGINT. Returns the process exit code.

    The role's topics must exist; ``setup`` runs before its clients start."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from {sorted(ROLES)}")
    if role == "ingest" and settings.ingest_nice:
        # before the model's thread pools exist: they inherit it (streams/niceness.py)
        nice = lower_cpu_priority(settings.ingest_nice)
        log.info("ingest worker at CPU nice %d (AICHAT_INGEST_NICE=%d): answering on this machine "
                 "gets the CPU first", nice, settings.ingest_nice)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app, ctx = build(settings, role, setup)
    worker = faust.Worker(
        app,
        Resources(ctx, loop=loop),
        loop=loop,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    log.info("starting worker role=%s agents=%s", role, ",".join(ROLES[role]))
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
