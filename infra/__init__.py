"""Local service stack: Kafka, Elasticsearch and Weaviate on 127.0.0.1, without Docker.

``aichat stack up | down | status | init`` (:mod:`infra.cli`) drives :mod:`infra.stack`;
each service lives in its own package (``infra/kafka``, ``infra/elk``, ``infra/weaviate``)
with a launcher (provision, render config, start command, health) and the
idempotent "ensure" step run once it is ready (topics, index template, collection).
"""
