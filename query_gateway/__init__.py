"""Websocket gateway: chat clients in, ``queries`` topic out, ``answers`` partition back.

    client ──ws──► connection ─► inflight ──► transport.publish(QueryEvent) ──► queries
    client ◄─ws─── connection ◄─ inflight ◄── router queue ◄── answers[reply partition]

Map: ``config`` settings · ``errors`` refusal codes · ``protocol`` frames ·
``auth`` Origin + JWT → who is asking · ``tokens`` development tokens ·
``ratelimit`` per-user budgets (local or Redis, fail-open) · ``routing`` answers → per-query
queues · ``transport`` the Kafka seam · ``events`` ``QueryCancelled`` ·
``hub`` all sessions, drain · ``connection`` one websocket session ·
``inflight`` one query's life · ``admission`` caps on open websockets ·
``refusals`` rate-limited refusal logs, excerpts of client text · ``health``
readiness checks · ``app`` the public and the operator Starlette apps · ``server``
uvicorn (public + operator listeners), TLS, drain · ``client`` ``ask()`` · ``cli``.
``GATEWAY.md`` is the operator's guide (auth, limits, TLS, replicas).

Kept light on purpose: no faust, no torch (1,000 idle connections < 300 MB RSS).
"""
