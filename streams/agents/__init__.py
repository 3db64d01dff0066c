"""One module per agent; each exposes ``register(app, ctx)`` and ``NEEDS``.

``NEEDS`` names the clients the agent takes from its context (``model``, ``weaviate``,
``elasticsearch``; streams/resources.py): a worker creates the union of its agents'
needs (:func:`needs`), and nothing else.

A worker runs one *role* (one Faust app id = one consumer group):

=========  ==========================================  ==========================
role       agents                                      needs
=========  ==========================================  ==========================
pipeline   chunker, embedder, indexer, answerer        model, Weaviate
ingest     chunker, embedder, indexer                  model, Weaviate
answer     answerer                                    model, Weaviate
shipper    shipper                                     Elasticsearch
=========  ==========================================  ==========================
"""

from __future__ import annotations

import importlib

from streams.resources import Need

ROLES: dict[str, tuple[str, ...]] = {
    "pipeline": ("chunker", "embedder", "indexer", "answerer"),
    "ingest": ("chunker", "embedder", "indexer"),
    "answer": ("answerer",),
    "shipper": ("shipper",),
}


def needs(role: str) -> frozenset[Need]:
    """The clients a role's agents use: the union of their modules' ``NEEDS``."""
    used: set[Need] = set()
    for agent in ROLES[role]:
        used |= importlib.import_module(f"{__name__}.{agent}").NEEDS
    return frozenset(used)
