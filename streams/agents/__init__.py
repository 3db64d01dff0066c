"""One module per agent; each exposes ``register(app, ctx)``.

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

ROLES: dict[str, tuple[str, ...]] = {
    "pipeline": ("chunker", "embedder", "indexer", "answerer"),
    "ingest": ("chunker", "embedder", "indexer"),
    "answer": ("answerer",),
    "shipper": ("shipper",),
}
