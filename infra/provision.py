"""What one worker role needs to exist, created by the entry point that starts it (``aichat worker``).

1. Its topics (``topics.toml``), before the app is built: :func:`ensure_worker_topics`.
2. What its clients use (:func:`streams.agents.needs`), as setup steps the worker runs
   before those clients start, each retried while its service is down:
   the Weaviate collections (infra/weaviate/provision.py) for roles that index or answer —
   for the roles that write them, after checking that this worker may write its collection
   (no alias; a generation only with its settings: infra/generations.py) —, the
   Elasticsearch index templates (infra/elk/templates.py) for the shipper.

The runtime classes (``WeaviateStore``, ``ElasticSink``) only connect.
"""

from __future__ import annotations

import asyncio
from functools import partial

from infra.elk.templates import ensure_index_templates
from infra.generations import check_writer, writes
from infra.kafka.topics import ensure_topics
from infra.weaviate.provision import ensure_collections
from streams.agents import needs
from streams.config import WorkerSettings
from streams.resources import SetupStep


def ensure_worker_topics(settings: WorkerSettings) -> list[str]:
    """Blocking: create the missing topics; their full names."""
    return asyncio.run(ensure_topics(settings))


def worker_setup(settings: WorkerSettings, role: str) -> list[SetupStep]:
    """The steps that create what ``role``'s clients use, in the order its clients start."""
    used = needs(role)
    steps = []
    if writes(role):
        steps.append(SetupStep("index generation check", partial(check_writer, settings)))
    if "weaviate" in used:
        steps.append(SetupStep("Weaviate collections", partial(ensure_collections, settings)))
    if "elasticsearch" in used:
        steps.append(SetupStep("Elasticsearch index templates",
                               partial(ensure_index_templates, settings)))
    return steps
