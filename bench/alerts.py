"""Alert fire and resolve times: real faults, the production rules, Prometheus → Alertmanager → webhook.

    .venv/bin/aichat stack up                # the main Kafka (this drill stops nothing of it)
    .venv/bin/python -m bench.alerts [--rounds 3] [--for-divisor 60]

The drill of ``tests/faults/alerts_drill.py`` on a private stack in a temporary stack dir
on free ports (its own Elasticsearch, Prometheus, Alertmanager and alert webhook; a real
shipper worker on the main Kafka under its own topic prefix), ``--rounds`` times each:

* Elasticsearch stopped and 800 records published → ``AichatConsumerLagGrowing`` (the
  shipper's group) firing; Elasticsearch started → resolved, every record shipped;
* the shipper SIGKILLed → ``AichatProcessDown`` firing; started again → resolved.

The rules are the production ones with every ``for:`` divided by ``--for-divisor`` (ten
minutes → ten seconds at 60); scrapes and evaluations every second, Alertmanager's
``group_wait`` and ``group_interval`` one second. "fired after" counts from the fault to
the firing notification at the webhook, "resolved after" from the start of the recovery
(the worker or Elasticsearch started again) to the resolved one; "recovery" is how long
that start took until the process answered. With the production ``for:`` add it
(10 min, 1 min) to "fired after". Printed and written to ``bench/results/alerts.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine_info, print_table
from tests.faults.alerts_drill import TABLE_HEADER, AlertLab, table


async def drill(rounds: int, divisor: float, root: Path) -> list[dict[str, Any]]:
    lab = AlertLab.create(root, uuid.uuid4().hex[:10], for_divisor=divisor)
    rows: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        await lab.start()
        print(f"lab up in {time.monotonic() - started:.1f}s (Elasticsearch, shipper, Prometheus, "
              "Alertmanager, webhook)")
        for n in range(1, rounds + 1):
            for scenario in (lab.shipper_lag, lab.worker_down):
                row = {"round": n, **await scenario()}
                rows.append(row)
                print(f"round {n}: {row['alert']} fired after {row['fired_s']:.1f}s, "
                      f"resolved {row['resolved_s']:.1f}s after the recovery began")
    except BaseException:
        print(lab.log_tails())
        raise
    finally:
        await lab.stop()
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for alert in sorted({r["alert"] for r in rows}):
        mine = [r for r in rows if r["alert"] == alert]
        out[alert] = {f"{key}_{stat}": round(fn([r[key] for r in mine]), 1)
                      for key in ("fired_s", "recovery_s", "resolved_s")
                      for stat, fn in (("median", statistics.median), ("max", max))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--for-divisor", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "alerts.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="aichat-alerts-") as tmp:
        rows = asyncio.run(drill(args.rounds, args.for_divisor, Path(tmp)))
    print()
    print_table(["round", *TABLE_HEADER], [[r["round"], *cells] for r, cells in zip(rows, table(rows), strict=True)])
    stats = summary(rows)
    print()
    print_table(["alert", "fired median / max (s)", "resolved median / max (s)"],
                [[a, f"{s['fired_s_median']} / {s['fired_s_max']}",
                  f"{s['resolved_s_median']} / {s['resolved_s_max']}"] for a, s in stats.items()])
    result = {"benchmark": "alerts", "machine": machine_info(), "rounds": args.rounds,
              "for_divisor": args.for_divisor, "scrape_interval_s": 1, "evaluation_interval_s": 1,
              "alertmanager_group_wait_s": 1, "rows": rows, "summary": stats}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
