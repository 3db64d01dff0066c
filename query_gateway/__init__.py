"""Websocket gateway: chat clients in, ``queries`` topic out, ``answers`` partition back.

    client ──ws──► connection ──► transport.publish(QueryEvent) ──► queries
    client ◄─ws─── connection ◄── router queue ◄── answers[reply partition]

Map: ``config`` settings · ``errors`` refusal codes · ``protocol`` frames ·
``auth`` who is asking · ``routing`` answers → per-query queues · ``transport``
the Kafka seam · ``connection`` one websocket · ``health`` readiness checks ·
``app`` the Starlette app · ``server`` uvicorn · ``client`` ``ask()`` · ``cli``.

Kept light on purpose: no faust, no torch (1,000 idle connections < 300 MB RSS).
"""
