"""Index generations: the physical collections behind a serving alias (``aichat reindex``).

The answer workers search ``AICHAT_WEAVIATE_COLLECTION``, the *serving name*. A fresh
deployment has a real collection of that name; once it has been re-indexed the name is a
Weaviate alias that points at one *generation*: a physical chunk collection (``Chunk_v2``)
and its document states (``Chunk_v2Docs``), built from ``documents`` and kept current by an
ingest pipeline of its own. Moving the alias is atomic in Weaviate, so a switch or a
rollback is a single call while the queries go on.

* A generation's **spec** — the alias it serves, the collection that served when it was
  made (the rollback target), and the settings it is built with (model, chunk sizes) — is
  written into its chunk collection's description when ``aichat reindex start`` creates it,
  and never changes. Every worker and operator reads the same one from Weaviate.
* Its **pipeline** is ``aichat worker --role ingest`` with ``AICHAT_INDEX_GENERATION=<name>``
  and the spec's settings (:meth:`Generation.env`): it writes that collection, in the consumer
  group ``aichat-ingest.<name>`` through topics ``chunks.<name>`` and ``embeddings.<name>``
  (streams/app.py, :meth:`streams.config.KafkaSettings.topic`), so it reads every document
  again and never mixes with another generation's chunks.
* A writer checks before it starts (:func:`check_writer`, a setup step of the ingest roles):
  never through an alias (a switch would redirect its writes into a generation built with
  other settings), and into a generation only with that generation's settings and group.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

from streams.agents import ROLES
from streams.config import ENV_PREFIX, WeaviateSettings, WorkerSettings
from streams.endpoints import weaviate_http_options
from streams.errors import ConfigError, DependencyUnavailable

#: the settings a generation is built with (what its spec records and its workers must run)
SPEC_KEYS = ("embed_model", "chunk_max_tokens", "chunk_overlap_tokens")
#: marks the spec inside a collection's description
MARKER = "aichat-generation:"
_SPEC_LINE = re.compile(rf"^{re.escape(MARKER)}\s*(\{{.*\}})\s*$", re.MULTILINE)
COLLECTION_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Generation:
    """One physical collection built for a serving alias, as its description records it."""

    collection: str
    alias: str
    replaces: str | None
    settings: dict[str, str | int] = field(default_factory=dict)
    created_at: str = ""

    def describe(self, description: str) -> str:
        """``description`` with this spec's line (the collection's description in Weaviate)."""
        spec = {k: v for k, v in asdict(self).items() if k != "collection"}
        return f"{description}\n{MARKER} {json.dumps(spec, sort_keys=True)}"

    @classmethod
    def from_schema(cls, schema: dict[str, Any] | None) -> Generation | None:
        """The spec in a class definition's description; None for any other collection."""
        if not schema:
            return None
        match = _SPEC_LINE.search(str(schema.get("description") or ""))
        if match is None:
            return None
        spec = json.loads(match.group(1))
        return cls(collection=str(schema["class"]), alias=str(spec["alias"]),
                   replaces=spec.get("replaces"), settings=dict(spec.get("settings") or {}),
                   created_at=str(spec.get("created_at") or ""))

    def env(self) -> dict[str, str]:
        """The environment of this generation's ingest workers (beside the deployment's own)."""
        return {f"{ENV_PREFIX}INDEX_GENERATION": self.collection,
                **{f"{ENV_PREFIX}{key.upper()}": str(value) for key, value in sorted(self.settings.items())}}

    def env_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.env().items())

    def mismatches(self, settings: WorkerSettings) -> list[str]:
        """The spec's settings that ``settings`` has otherwise, as ``KEY is A, the generation B``."""
        return [f"{ENV_PREFIX}{key.upper()} is {getattr(settings, key)!r}, generation {self.collection} "
                f"is built with {value!r}"
                for key, value in sorted(self.settings.items()) if getattr(settings, key) != value]


def spec_settings(settings: WorkerSettings) -> dict[str, str | int]:
    """What a new generation records of the settings it is made with."""
    return {key: getattr(settings, key) for key in SPEC_KEYS}


@dataclass(frozen=True)
class Serving:
    """What the serving name is now: an alias of ``target``, a real collection, or nothing."""

    name: str
    kind: Literal["alias", "collection", "none"]
    target: str | None  # the collection that answers (the name itself for a real collection)


def writes(role: str) -> bool:
    return bool({"chunker", "indexer"} & set(ROLES[role]))


def generation_settings(settings: WorkerSettings, role: str) -> WorkerSettings:
    """The settings a worker of ``role`` runs with: with ``AICHAT_INDEX_GENERATION`` set, the
    ingest role writes that collection (the other roles are unaffected: the answer role
    searches the serving name, an alias)."""
    generation = settings.index_generation
    if not generation or not writes(role):
        return settings
    if role != "ingest":
        raise ConfigError(f"{ENV_PREFIX}INDEX_GENERATION={generation} is for the ingest role: role "
                          f"{role} also answers; run --role ingest and --role answer instead")
    if generation == settings.weaviate_collection:
        raise ConfigError(f"{ENV_PREFIX}INDEX_GENERATION must name a collection of its own, not the "
                          f"serving name {settings.weaviate_collection}")
    return settings.model_copy(update={"weaviate_collection": generation})


def writer_problems(settings: WorkerSettings, alias_of: str | None, spec: Generation | None) -> list[str]:
    """Why a worker with ``settings`` must not write its collection (pure; [] = it may).

    ``alias_of`` is the alias's target when the collection name is an alias, ``spec`` the
    collection's generation spec (None for a collection not made by ``aichat reindex``)."""
    name, generation = settings.weaviate_collection, settings.index_generation
    if alias_of is not None:
        return [f"{ENV_PREFIX}WEAVIATE_COLLECTION={name} is an alias (of {alias_of}): an ingest worker "
                f"writes one physical collection, so a switch never moves its writes; run it as "
                f"that generation's worker (`aichat reindex status` prints its settings), or start "
                f"one with `aichat reindex start --collection {alias_of}`"]
    if not generation:
        if spec is None:
            return []
        return [f"collection {name} is a generation of {spec.alias}: its workers run with "
                f"{spec.env_line()} and {ENV_PREFIX}WEAVIATE_COLLECTION={spec.alias}"]
    if spec is None:
        return [f"{ENV_PREFIX}INDEX_GENERATION={generation}: no such generation (make it with "
                f"`aichat reindex start --collection {generation}`)"]
    problems = spec.mismatches(settings)
    if problems:
        problems.append(f"its workers run with {spec.env_line()}")
    return problems


@asynccontextmanager
async def weaviate_rest(settings: WeaviateSettings, timeout_s: float = 30.0) -> AsyncIterator[httpx.AsyncClient]:
    """Weaviate's REST API; an unreachable server is :class:`DependencyUnavailable`."""
    try:
        async with httpx.AsyncClient(**weaviate_http_options(settings), timeout=timeout_s) as http:
            yield http
    except httpx.TransportError as exc:
        raise DependencyUnavailable(f"Weaviate unreachable: {exc}") from exc


def _checked(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 500:
        raise DependencyUnavailable(f"Weaviate: {what}: HTTP {response.status_code} {response.text[:200]}")
    if response.status_code >= 300 and response.status_code != 404:
        raise ConfigError(f"Weaviate refused {what}: HTTP {response.status_code} {response.text[:300]}")
    return response


async def alias_target(http: httpx.AsyncClient, name: str) -> str | None:
    """The collection the alias ``name`` points at; None when ``name`` is no alias."""
    response = _checked(await http.get(f"/v1/aliases/{name}"), f"reading alias {name}")
    return None if response.status_code == 404 else str(response.json()["class"])


async def class_schema(http: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    """The definition of the *collection* ``name`` (None when missing; ask :func:`alias_target`
    first: Weaviate answers an alias's name with its target's definition)."""
    response = _checked(await http.get(f"/v1/schema/{name}"), f"reading collection {name}")
    return None if response.status_code == 404 else dict(response.json())


async def serving(http: httpx.AsyncClient, name: str) -> Serving:
    target = await alias_target(http, name)
    if target is not None:
        return Serving(name, "alias", target)
    if await class_schema(http, name) is not None:
        return Serving(name, "collection", name)
    return Serving(name, "none", None)


async def generation(http: httpx.AsyncClient, name: str) -> Generation | None:
    """The spec of collection ``name`` (None: no such collection, or not a generation)."""
    if await alias_target(http, name) is not None:
        return None
    return Generation.from_schema(await class_schema(http, name))


async def generations(http: httpx.AsyncClient, alias: str) -> list[Generation]:
    """Every generation made for ``alias``, oldest first."""
    response = _checked(await http.get("/v1/schema"), "reading the schema")
    specs = (Generation.from_schema(c) for c in response.json().get("classes") or [])
    return sorted((g for g in specs if g is not None and g.alias == alias), key=lambda g: g.created_at)


async def check_writer(settings: WorkerSettings) -> None:
    """Refuse (:class:`ConfigError`, the worker stops) a writer of the wrong collection:
    see :func:`writer_problems`. A setup step of the ingest roles (infra/provision.py)."""
    name = settings.weaviate_collection
    async with weaviate_rest(settings) as http:
        alias_of = await alias_target(http, name)
        spec = None if alias_of is not None else Generation.from_schema(await class_schema(http, name))
    problems = writer_problems(settings, alias_of, spec)
    if problems:
        raise ConfigError("this worker must not write collection " + name + ":\n  " + "\n  ".join(problems))
