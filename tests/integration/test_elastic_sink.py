"""ElasticSink against the real Elasticsearch: deterministic ids, item failures surface."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from infra.elk.templates import ensure_index_templates
from schemas.codec import encode
from schemas.events import DocumentEvent
from streams.config import WorkerSettings
from streams.elastic_sink import ElasticSink
from streams.errors import EffectFailed
from streams.es_documents import EsDocument, to_document


@pytest.fixture
async def sink(services: WorkerSettings, unique: str) -> AsyncIterator[ElasticSink]:
    settings = services.model_copy(update={"elastic_index_prefix": f"sink-{unique}"})
    await ensure_index_templates(settings)
    s = ElasticSink(settings)
    await s.start()
    yield s
    await s.client.options(ignore_status=404).indices.delete(index=f"sink-{unique}-*")
    await s.client.options(ignore_status=404).indices.delete_index_template(name=f"sink-{unique}")
    await s.stop()


def _doc(prefix: str, offset: int) -> EsDocument:
    value = encode(DocumentEvent(doc_id=f"d{offset}", version=1, text="hello"))
    return to_document(prefix=prefix, dataset="documents", topic="documents", partition=0,
                       offset=offset, key=f"d{offset}", timestamp_s=1_790_000_000.0, value=value)


async def test_replayed_records_do_not_duplicate(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    docs = [_doc(prefix, i) for i in range(5)]
    await sink.write(docs)
    await sink.write(docs[2:])  # replay after a crash
    await sink.client.indices.refresh(index=f"{prefix}-*")
    count = await sink.client.count(index=f"{prefix}-*")
    assert count["count"] == 5


async def test_the_template_maps_ids_as_keywords(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    await sink.write([_doc(prefix, 1)])
    await sink.client.indices.refresh(index=f"{prefix}-*")
    found = await sink.client.search(index=f"{prefix}-*", query={"term": {"aichat.doc_id": "d1"}})
    assert found["hits"]["total"]["value"] == 1


async def test_a_refused_item_is_an_error_not_a_silent_gap(sink: ElasticSink) -> None:
    prefix = sink.settings.elastic_index_prefix
    bad = _doc(prefix, 9)
    bad.source["aichat"]["version"] = "not a number"  # mapped as long
    with pytest.raises(EffectFailed, match="1 of 2 documents refused"):
        await sink.write([_doc(prefix, 8), bad])
