"""What agents share in one worker: settings, topics, long-lived clients.

Each agent module declares what it uses (``NEEDS``: ``model``, ``weaviate``,
``elasticsearch``; streams/agents/__init__.py); the worker creates only those clients
and the agent takes them from the context typed by their Protocols (:attr:`AgentContext.model`,
:attr:`~AgentContext.weaviate`, :attr:`~AgentContext.elasticsearch`), so an agent can
call only what the Protocol promises, and a worker built without a client an agent
needs fails at registration, naming both.

:class:`Resources` is a ``mode.Service`` passed to the Faust worker *before* the
app, so every client is connected (and the model loaded) before any agent sees
an event, and closed after the app stopped. Before the clients it runs the
context's setup steps (:class:`SetupStep`): what the entry point wants to exist
first (the worker's Weaviate collections and Elasticsearch templates,
infra/provision.py), each retried like a client start while its service is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import faust
from mode import Service

from schemas.codec import encode
from schemas.events import Event
from streams.backoff import Backoff
from streams.config import WorkerSettings
from streams.elastic_sink import EventSink
from streams.embedding import Embedder
from streams.generation import ExtractiveGenerator, Generator
from streams.metrics import EMITTED, READY
from streams.retrying import until_done
from streams.topics import Topics
from streams.vectorstore import VectorStore

log = logging.getLogger(__name__)

C = TypeVar("C")

AGENT_RETRY = Backoff(first_s=0.2, max_s=10.0)
START_RETRY = Backoff(first_s=0.5, max_s=10.0)


def agent_retry(settings: WorkerSettings) -> Backoff:
    """:data:`AGENT_RETRY` with the cap of ``AICHAT_AGENT_RETRY_MAX_S``."""
    cap = settings.agent_retry_max_s
    return replace(AGENT_RETRY, first_s=min(AGENT_RETRY.first_s, cap), max_s=cap)


#: the clients an agent may need (its module's ``NEEDS``)
Need = Literal["model", "weaviate", "elasticsearch"]


class MissingResource(RuntimeError):
    """An agent was registered in a worker that did not create a client it needs."""


@runtime_checkable
class Lifecycle(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class SetupStep:
    """One thing to create before the clients start (idempotent: it may run again)."""

    name: str
    run: Callable[[], Awaitable[object]]


@dataclass
class AgentContext:
    settings: WorkerSettings
    app: faust.App
    topics: Topics
    embedder: Embedder | None = None
    store: VectorStore | None = None
    sink: EventSink | None = None
    generator: Generator = field(default_factory=ExtractiveGenerator)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    #: how agents wait between attempts while a dependency is down (streams/delivery.py)
    retry: Backoff = field(default_factory=lambda: AGENT_RETRY)
    #: run before the clients start, in order (given by the entry point)
    setup: Sequence[SetupStep] = ()
    #: clients an agent made at registration (the answer cache), started and stopped with these
    extra: list[Lifecycle] = field(default_factory=list)

    @property
    def model(self) -> Embedder:
        """The embedding model, for agents whose ``NEEDS`` has ``model``."""
        return _required(self.embedder, "model")

    @property
    def weaviate(self) -> VectorStore:
        """The vector store, for agents whose ``NEEDS`` has ``weaviate``."""
        return _required(self.store, "weaviate")

    @property
    def elasticsearch(self) -> EventSink:
        """The Elasticsearch sink, for agents whose ``NEEDS`` has ``elasticsearch``."""
        return _required(self.sink, "elasticsearch")

    def resources(self) -> list[Lifecycle]:
        started: list[object] = [self.store, self.sink, self.embedder, self.generator, *self.extra]
        return [r for r in started if isinstance(r, Lifecycle)]

    async def send(
        self,
        agent: str,
        topic: Any,
        key: str,
        event: Event,
        *,
        partition: int | None = None,
    ) -> Awaitable[Any]:
        """Queue one event for the producer; await the result to wait for the broker's ack."""
        fut = await topic.send(key=key.encode(), value=encode(event), partition=partition)
        EMITTED.labels(agent, self.topics.base_name(topic.get_topic_name())).inc()
        return fut

    @staticmethod
    async def delivered(futures: Sequence[Awaitable[Any]]) -> None:
        """Wait until the broker acknowledged every queued event (acks=all)."""
        if futures:
            await asyncio.gather(*futures)


class Resources(Service):
    """Runs the setup steps, then starts the context's clients, before the app; stops them after it."""

    def __init__(self, ctx: AgentContext, **kwargs: Any) -> None:
        self.ctx = ctx
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        for step in self.ctx.setup:
            await self._start(step.name, step.run)
        for resource in self.ctx.resources():
            await self._start(type(resource).__name__, resource.start)
        self.ctx.started.set()
        READY.set(1)

    async def _start(self, name: str, start: Callable[[], Awaitable[object]]) -> None:
        """Start one client (or run one setup step); a dependency that is not up yet is
        waited for, not fatal."""
        log.info("starting %s", name)
        error = await until_done(start, START_RETRY, what=f"starting {name}")
        if error is not None:
            raise error

    async def on_stop(self) -> None:
        READY.set(0)
        for resource in reversed(self.ctx.resources()):
            try:
                await resource.stop()
            except Exception:
                log.exception("error while stopping %s", type(resource).__name__)


def _required(client: C | None, need: Need) -> C:
    if client is None:
        raise MissingResource(f"an agent needs {need!r}, but this worker did not create it: "
                              "add it to the agent module's NEEDS")
    return client
