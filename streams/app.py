"""The Faust app, built from settings by the worker entry point.

Declared top to bottom: settings → app → topics (streams/topics.py) → agents
(streams/agents/*, each with a ``register(app, ctx)``) → worker (streams/worker.py).
One app id per worker *role* is one consumer group, ``<prefix>aichat-<role>``: the
shipper's lag never holds back the others' commits, and ``aichat up``'s ``answer``
and ``ingest`` workers (or the all-in-one ``pipeline``) commit independently. A group
that never committed starts at the beginning of its topics; infra/groups.py hands the
``pipeline`` group's offsets to ``ingest`` and ``answer`` when they first start.
"""

from __future__ import annotations

import faust

from streams.config import WorkerSettings


def app_id(settings: WorkerSettings, role: str) -> str:
    """The role's consumer group; the ingest workers of an index generation
    (``AICHAT_INDEX_GENERATION``, infra/generations.py) have their own, so that they read
    ``documents`` again from its beginning: ``<prefix>aichat-ingest.<generation>``."""
    group = f"{settings.topic_prefix}aichat-{role}"
    return f"{group}.{settings.index_generation}" if settings.index_generation and role == "ingest" else group


def create_app(settings: WorkerSettings, role: str) -> faust.App:
    datadir = settings.worker_data_dir / role
    datadir.mkdir(parents=True, exist_ok=True)
    brokers = ";".join(f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(","))
    return faust.App(
        app_id(settings, role),
        broker=brokers,
        store="memory://",
        autodiscover=False,
        datadir=str(datadir),
        # topics come from infra/kafka/topics.toml (created before the app starts)
        topic_allow_declare=False,
        topic_disable_leader=True,
        # at-least-once: wait for all in-sync replicas, start from the beginning
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # a SIGKILLed worker's partitions move to the others after this, not after 60 s
        broker_session_timeout=20.0,
        broker_heartbeat_interval=3.0,
        # inference runs in a thread, but one embedding batch may still take seconds
        broker_max_poll_interval=300.0,
        stream_wait_empty=False,
        web_bind="127.0.0.1",
        web_port=settings.worker_web_port,
        web_enabled=True,
    )
