"""What a conversation's catch-up costs per question: ``ConversationLog.caught_up`` timed.

Every question of a conversation first waits until the replica's view of the
``conversations`` topic holds every turn written before it (streams/conversation_log.py).
This measures that wait on an idle private topic, with the end offsets asked on their own
connection (the code's way) and, as the baseline, on the reading consumer's connection,
where the request queues behind the long-polling fetch.

    python -m bench.catchup [--calls 50]      # → bench/results/catchup.json
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import RESULTS, machine_info, print_table, save_result
from streams.config import WorkerSettings, load_settings
from streams.conversation_log import ConversationLog
from streams.conversations import ConversationView


async def measure(bootstrap: str, calls: int, shared: bool) -> list[float]:
    topic = f"bench-catchup-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
        view = ConversationView(max_turns=10, ttl_s=3600, max_conversations=100)
        log = ConversationLog(bootstrap, topic, view)
        await log.start()
        try:
            if shared:  # the baseline: end offsets on the reading consumer's own connection
                log._offsets = log._consumer  # noqa: SLF001
            await log.caught_up(10)
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                if not await log.caught_up(5):
                    raise RuntimeError("the view did not catch up")
                times.append((time.perf_counter() - started) * 1000)
            return times
        finally:
            await log.stop()
    finally:
        await admin.delete_topics([topic])
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    settings = load_settings(WorkerSettings)
    rows = {}
    for name, shared in (("own_connection", False), ("reading_consumer_connection", True)):
        times = sorted(asyncio.run(measure(settings.kafka_bootstrap, args.calls, shared)))
        rows[name] = {"p50_ms": round(statistics.median(times), 2),
                      "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                      "max_ms": round(times[-1], 2)}
    print_table(["end offsets asked on", "p50 ms", "p95 ms", "max ms"],
                [[name, r["p50_ms"], r["p95_ms"], r["max_ms"]] for name, r in rows.items()])
    result = {"calls": args.calls, "catchup_p50_ms": rows["own_connection"]["p50_ms"],
              "baseline_p50_ms": rows["reading_consumer_connection"]["p50_ms"],
              "rows": rows, "machine": machine_info()}
    save_result(RESULTS / "catchup.json", result)


if __name__ == "__main__":
    main()
