"""Live alerting: real faults make the production alert rules fire and resolve, end to end.

A private stack of this module (tests/faults/alerts_drill.py: its own Elasticsearch,
Prometheus, Alertmanager and alert webhook on free ports, started by ``infra.stack``) and a
real shipper worker on the main Kafka under its own topic prefix:

1. Elasticsearch (the lab's) stopped while records keep coming: the shipper's lag alert
   ``AichatConsumerLagGrowing`` reaches the webhook as firing, and as resolved once
   Elasticsearch is back and the shipper caught up; every record is in Elasticsearch after.
2. The shipper SIGKILLed: ``AichatProcessDown`` for its instance fires; started again, it
   resolves.

The rules' ``for:`` durations are divided by 60 for the drill (the rest is the production
rules' text); the measured times are printed as a table (``python -m bench.alerts`` repeats
the drill and saves them).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.alerts_drill import TABLE_HEADER, AlertLab, table

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
async def lab() -> AsyncIterator[AlertLab]:
    # not under pytest's basetemp: a pytest session starting meanwhile (another checkout's)
    # resets /tmp/pytest-of-<user> to 0700, and Elasticsearch, run as the stack's unprivileged
    # user when we are root, could no longer reach its directory
    root = Path(tempfile.mkdtemp(prefix="aichat-alert-lab-"))
    lab = AlertLab.create(root, uuid.uuid4().hex[:10])
    try:
        await lab.start()
        yield lab
    except BaseException:
        print(lab.log_tails())
        raise
    finally:
        await lab.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_alerts_fire_on_real_faults_and_resolve(lab: AlertLab) -> None:
    rows = []
    try:
        lag = await lab.shipper_lag()
        rows.append(lag)
        assert lag["shipped"] == lab.records  # nothing lost while Elasticsearch was down
        down = await lab.worker_down()
        rows.append(down)
    except BaseException:
        print(lab.log_tails())
        raise
    finally:
        widths = [max(len(str(c)) for c in col) for col in zip(TABLE_HEADER, *table(rows), strict=True)]
        for line in [TABLE_HEADER, *table(rows)]:
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
        for row in rows:
            print(f"{row['alert']}: also notified {row['also_notified']}")
    # shortened for: 10 s and 1 s, evaluation and scrapes every second, group_wait 1 s;
    # lag is measured every 10 s by the worker: generous bounds on a shared 2-core machine
    assert lag["fired_s"] < 120, lag
    assert down["fired_s"] < 30, down
    assert down["resolved_s"] < down["recovery_s"] + 30, down
    assert lag["resolved_s"] < lag["recovery_s"] + 120, lag
