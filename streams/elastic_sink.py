"""The Elasticsearch sink: bulk writes of the shipper's documents, checked item by item.

The documents come from streams/es_documents.py. The index templates that map their
indices are put before the sink starts, by whoever starts the process (``aichat worker``
through infra/elk/templates.py): the sink only connects.

:meth:`ElasticSink.write` checks every bulk item:

* 429 and 5xx items (overload, shards not yet allocated after a restart) are
  retried alone with capped backoff, then the whole batch is reported retriable;
* any other refused item raises :class:`EffectFailed` naming it and the reason
  (the agent isolates the batch and dead-letters only what fails alone);
* an unreachable cluster raises :class:`DependencyUnavailable`;
* a whole request refused for our credentials (401 expired key, 403 missing
  privilege) is the cluster's problem, not the records': :class:`AccessDenied`
  (retriable, so nothing is dead-lettered) and :attr:`ElasticSink.refusing` says
  why until a request passes again — readiness turns red, an alert fires;
* a request too large for the cluster (413) is split in halves until it fits;
  only a single document too large on its own is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from streams.backoff import Backoff
from streams.config import ElasticSettings
from streams.errors import DependencyUnavailable, EffectFailed
from streams.es_documents import EsDocument, StoredDocument, bulk_body
from streams.metrics import ELASTIC_ACCESS_DENIED, SHIPPER_BULK_SECONDS, SHIPPER_ITEMS

log = logging.getLogger(__name__)

#: item statuses worth sending again: overload, and shards unavailable while the cluster recovers
_RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})
THROTTLE_ROUNDS = 5
THROTTLE = Backoff(first_s=0.2, max_s=2.0)


class ConcurrentUpdate(DependencyUnavailable):
    """A conditional write lost a race (HTTP 409): plan the batch again from fresh reads."""


class AccessDenied(DependencyUnavailable):
    """The cluster refused the whole request for our credentials (401/403): wait for an
    operator to fix the key or its privileges, then go on; never the records' fault."""


class RequestTooLarge(Exception):
    """HTTP 413 for a bulk request: split it (internal to :class:`ElasticSink`)."""



def elastic_client(settings: ElasticSettings) -> AsyncElasticsearch:
    """The client of ``elastic_url`` with its API key; an https URL is verified against
    ``elastic_ca_file`` when set (else the system's roots)."""
    tls: dict[str, Any] = {}
    if settings.elastic_ca_file is not None:
        tls["ca_certs"] = str(settings.elastic_ca_file)
    return AsyncElasticsearch(
        settings.elastic_url,
        api_key=settings.elastic_api_key.get_secret_value() if settings.elastic_api_key else None,
        request_timeout=30,
        max_retries=2,
        retry_on_timeout=True,
        **tls,
    )


class EventSink(Protocol):
    """What the shipper calls: realtime reads of stored documents, and bulk writes."""

    #: why the cluster refuses our credentials, None while it accepts them (readiness)
    refusing: str | None

    async def get_documents(self, index: str, ids: Sequence[str]) -> dict[str, StoredDocument]: ...

    async def write(self, docs: Sequence[EsDocument]) -> None: ...


class ElasticSink:
    """Owns one ``AsyncElasticsearch`` client; :meth:`write` is all-or-error per batch."""

    def __init__(self, settings: ElasticSettings) -> None:
        self.settings = settings
        self._client: AsyncElasticsearch | None = None
        #: why the cluster refuses our credentials (401/403), None while it accepts them
        self.refusing: str | None = None

    async def start(self) -> None:
        s = self.settings
        self._client = elastic_client(s)
        log.info("Elasticsearch sink to %s, indices %s-*", s.elastic_url, s.elastic_index_prefix)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("ElasticSink used before start()")
        return self._client

    async def get_documents(self, index: str, ids: Sequence[str]) -> dict[str, StoredDocument]:
        """Realtime ``_mget``: each id that exists, with its ``_seq_no`` and ``_primary_term``."""
        if not ids:
            return {}
        try:
            response = await self.client.options(ignore_status=404).mget(index=index, ids=list(ids))
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise DependencyUnavailable(f"Elasticsearch unreachable: {exc}") from exc
        except TransportError as exc:
            raise DependencyUnavailable(f"Elasticsearch mget failed: {exc}") from exc
        except ApiError as exc:
            raise self._refused(exc, f"the mget of {index}") from exc
        self._accepted()
        found: dict[str, StoredDocument] = {}
        for doc in response.get("docs", []):
            if doc.get("found"):
                found[doc["_id"]] = StoredDocument(doc["_source"], doc["_seq_no"], doc["_primary_term"])
            elif "error" in doc and doc["error"].get("type") != "index_not_found_exception":
                raise DependencyUnavailable(f"Elasticsearch mget of {doc.get('_id')}: {doc['error']}")
        return found

    async def write(self, docs: Sequence[EsDocument]) -> None:
        """Apply every action or raise; overload and connection trouble are retriable."""
        pending = list(docs)
        for attempt in range(THROTTLE_ROUNDS):
            if not pending:
                return
            if attempt:
                await THROTTLE.wait(attempt)
            pending = await self._bulk_fitting(pending)
        if pending:
            raise DependencyUnavailable(
                f"Elasticsearch kept refusing {len(pending)} of {len(docs)} actions with 429/5xx"
            )

    async def _bulk_fitting(self, docs: list[EsDocument]) -> list[EsDocument]:
        """:meth:`_bulk`, halving the request while the cluster says it is too large (413)."""
        try:
            return await self._bulk(docs)
        except RequestTooLarge as exc:
            if len(docs) == 1:
                raise EffectFailed(
                    f"{docs[0].index}/{docs[0].id} alone is larger than the cluster accepts "
                    f"(HTTP 413, http.max_content_length): {exc}"
                ) from exc
            half = len(docs) // 2
            log.info("Elasticsearch: bulk of %d too large (413); splitting it", len(docs))
            return [*await self._bulk_fitting(docs[:half]), *await self._bulk_fitting(docs[half:])]

    def _refused(self, exc: ApiError, what: str) -> Exception:
        """The error for a whole request the cluster answered with an error status."""
        status = exc.meta.status
        if status in _RETRIABLE_STATUS:
            return DependencyUnavailable(f"Elasticsearch: {what}: HTTP {status}: {exc}")
        if status in (401, 403):
            reason = f"HTTP {status} for {what}: {str(exc)[:300]}"
            if self.refusing is None:
                log.error("Elasticsearch refuses our credentials (%s); retrying until an operator "
                          "fixes the key or its privileges", reason)
            self.refusing = reason
            ELASTIC_ACCESS_DENIED.set(1)
            return AccessDenied(f"Elasticsearch refused {what} (HTTP {status}): check "
                                f"AICHAT_ELASTIC_API_KEY and its privileges: {str(exc)[:300]}")
        if status == 413:
            return RequestTooLarge(str(exc)[:300])
        return EffectFailed(f"Elasticsearch refused {what}: HTTP {status}: {exc}")

    def _accepted(self) -> None:
        if self.refusing is not None:
            log.warning("Elasticsearch accepts our credentials again")
        self.refusing = None
        ELASTIC_ACCESS_DENIED.set(0)

    async def _bulk(self, docs: list[EsDocument]) -> list[EsDocument]:
        """One bulk request; returns the actions to send again (429/5xx), raises on refusals."""
        started = time.perf_counter()
        try:
            response = await self.client.bulk(operations=bulk_body(docs), refresh=False)
        except (EsConnectionError, ConnectionTimeout) as exc:
            raise DependencyUnavailable(f"Elasticsearch unreachable: {exc}") from exc
        except TransportError as exc:
            raise DependencyUnavailable(f"Elasticsearch bulk failed: {exc}") from exc
        except ApiError as exc:  # the whole request refused
            raise self._refused(exc, f"a bulk request of {len(docs)} actions") from exc
        finally:
            SHIPPER_BULK_SECONDS.observe(time.perf_counter() - started)
        self._accepted()
        if not response.get("errors"):
            SHIPPER_ITEMS.labels("ok").inc(len(docs))
            return []
        retry: list[EsDocument] = []
        failed: list[tuple[EsDocument, int, dict[str, Any]]] = []
        conflicts = 0
        for doc, item in zip(docs, response["items"], strict=True):
            result = next(iter(item.values()))
            status = int(result.get("status", 200))
            if "error" not in result:
                SHIPPER_ITEMS.labels("ok").inc()
            elif status == 409:
                conflicts += 1
                SHIPPER_ITEMS.labels("retried").inc()
            elif status in _RETRIABLE_STATUS:
                retry.append(doc)
                SHIPPER_ITEMS.labels("retried").inc()
            else:
                failed.append((doc, status, result["error"]))
                SHIPPER_ITEMS.labels("refused").inc()
        if failed:
            doc, status, error = failed[0]
            raise EffectFailed(
                f"{len(failed)} of {len(docs)} documents refused; first {doc.index}/{doc.id} "
                f"(HTTP {status}): {error.get('type')}: {error.get('reason')}"
                + (f" ({error['caused_by'].get('reason')})" if isinstance(error.get("caused_by"), dict) else "")
            )
        if conflicts:
            raise ConcurrentUpdate(f"{conflicts} of {len(docs)} conditional writes lost a race (409)")
        if retry:
            log.warning("Elasticsearch asked to retry %d of %d actions (429/5xx)", len(retry), len(docs))
        return retry
