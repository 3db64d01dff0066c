"""The alerting drill: real faults, the production alert rules, Prometheus → Alertmanager → webhook.

:class:`AlertLab` is a private stack in its own stack dir on free ports, started by the
stack's own code (``infra.stack.up``): Elasticsearch, Prometheus, Alertmanager and the alert
webhook (``infra/prometheus/``), plus a real ``shipper`` worker on the main Kafka under the
test's own topic prefix, writing to the private Elasticsearch. Nothing of the shared main
stack is stopped; the Elasticsearch this drill stops is its own.

The rules are the project's, rendered with every ``for:`` divided by ``for_divisor``
(:func:`infra.prometheus.render.shorten_rules`; 60: ten minutes → ten seconds, one minute
→ one second), scraped and evaluated every second, Alertmanager's ``group_wait`` and
``group_interval`` one second. Expressions, thresholds and labels are unchanged.

* :meth:`AlertLab.worker_down`: SIGKILL the shipper → ``AichatProcessDown`` firing; start it
  again → resolved;
* :meth:`AlertLab.shipper_lag`: stop Elasticsearch, publish more than the rule's 500 records
  → ``AichatConsumerLagGrowing`` for the shipper's group firing; start Elasticsearch again →
  the shipper catches up, resolved; every record published is then in Elasticsearch.

Each returns the measured times (seconds from the fault, and from the recovery, to the
notification reaching the webhook) and every other alert notified meanwhile.
``tests/faults/test_alerting.py`` runs each once; ``python -m bench.alerts`` repeats them.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from infra import stack
from infra.config import StackSettings, service_ports
from infra.kafka.topics import delete_prefixed_topics
from infra.proc import port_is_free
from infra.prometheus import RULES_FILE
from infra.prometheus import webhook as hook
from infra.prometheus.render import shorten_rules, write_targets
from infra.prometheus.settings import ALERTING_SERVICES, AlertingSettings, ScrapeTarget
from infra.service import service_paths
from ingest.sdk import DocumentPublisher
from schemas.events import DocumentEvent
from tests.faults.support import Process, start_worker
from tests.support import RunningSystem, isolated_env

FIRE_TIMEOUT_S = 180.0
RESOLVE_TIMEOUT_S = 240.0
LAG_RECORDS = 800  # AichatConsumerLagGrowing: more than 500 records behind


def free_ports(n: int, avoid: set[int], span: int = 1) -> list[int]:
    """``n`` free ports in 20000-30000 (each with ``port + 100`` free too when ``span`` > 1:
    Elasticsearch's transport port), clear of the main stack's."""
    rng = random.Random()
    found: list[int] = []
    while len(found) < n:
        port = rng.randrange(20_000, 29_800)
        wanted = [port] if span == 1 else [port, port + 100]
        if not avoid.intersection(wanted) and all(port_is_free("127.0.0.1", p) for p in wanted):
            found.append(port)
            avoid.update(wanted)
    return found


@dataclass
class AlertLab:
    settings: AlertingSettings
    system: RunningSystem
    shipper: Process | None = None
    records: int = 0  # documents this drill published
    notes: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, unique: str, *, for_divisor: float = 60) -> AlertLab:
        main = StackSettings()  # the main stack's ports, from the environment: stay clear
        avoid = {p for ports in service_ports(main).values() for p in ports} | {9090, 9190, 9191}
        (es,) = free_ports(1, avoid, span=2)
        prometheus, alertmanager, webhook = free_ports(3, avoid)
        rules = root / "rules-drill.yml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(shorten_rules(RULES_FILE.read_text(encoding="utf-8"), for_divisor),
                         encoding="utf-8")
        settings = AlertingSettings(
            stack_dir=root / "stack", elastic_url=f"http://127.0.0.1:{es}",
            kafka_bootstrap=main.kafka_bootstrap, es_heap="256m", up_timeout_s=180.0,
            down_timeout_s=30.0, prometheus_port=prometheus, alertmanager_port=alertmanager,
            alert_webhook_port=webhook, prometheus_scrape_interval="1s",
            prometheus_evaluation_interval="1s", alert_group_wait="1s", alert_group_interval="1s",
            alert_repeat_interval="1h", alert_rules_file=rules, scrape_targets=[])
        env = {**isolated_env(unique, root / "system"), "AICHAT_ELASTIC_URL": settings.elastic_url}
        return cls(settings, RunningSystem(env=env, logs=root / "system" / "logs"))

    # -- the lab's processes -------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.alert_webhook_port}"

    @property
    def group(self) -> str:
        return f"{self.system.env['AICHAT_TOPIC_PREFIX']}aichat-shipper"

    async def start(self) -> None:
        """Elasticsearch, then the shipper, then the alerting services scraping it."""
        await asyncio.to_thread(stack.up, self.settings, services=["elasticsearch"])
        self.shipper = start_worker(self.system, "shipper", "shipper")
        await self.shipper.ready()
        target = ScrapeTarget(job="aichat-worker", address=f"127.0.0.1:{self.shipper.port}",
                              role="shipper")
        self.settings = self.settings.model_copy(update={"scrape_targets": [target]})
        await asyncio.to_thread(stack.up, self.settings, services=list(ALERTING_SERVICES))
        # what an operator does for another layout: rewrite the discovery file in place
        write_targets(service_paths(self.settings, "prometheus").config, [target])
        await self.until(lambda: self.value(f'up{{instance="{target.address}"}}', 1.0),
                         60, "Prometheus scraping the shipper")

    async def stop(self) -> None:
        self.system.stop()
        await asyncio.to_thread(stack.down, self.settings,
                                services=["elasticsearch", *ALERTING_SERVICES])
        await delete_prefixed_topics(self.system.settings())

    def log_tails(self) -> str:
        from infra.proc import tail

        services = "\n".join(
            f"--- {name} ---\n" + "\n".join(tail(service_paths(self.settings, name).out_log, 15))
            for name in ("elasticsearch", *ALERTING_SERVICES))
        return services + "\n" + self.system.log_tails()

    # -- reading Prometheus and the webhook ----------------------------------------------

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{self.prometheus_url}/api/v1/query", params={"query": expr})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    async def value(self, expr: str, wanted: float | None = None) -> float | None:
        """The first sample's value (None: no series); with ``wanted``, None unless equal."""
        result = await self.query(expr)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return value if wanted is None or value == wanted else None

    async def until(self, probe: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                found = await probe()
            except httpx.HTTPError:
                found = None
            if found is not None and found is not False:
                return found
            await asyncio.sleep(0.25)
        raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")

    async def events(self, since: float) -> list[hook.AlertEvent]:
        return hook.alert_events(await asyncio.to_thread(hook.fetch, self.webhook_url, since))

    async def notified(self, alert: str, status: str, since: float, timeout_s: float,
                       **labels: str) -> hook.AlertEvent:
        async def probe() -> hook.AlertEvent | None:
            return next((e for e in await self.events(since) if e.matches(alert, status, **labels)),
                        None)

        found: hook.AlertEvent = await self.until(probe, timeout_s, f"{alert} {status} {labels}")
        return found

    async def not_firing(self, alert: str, **labels: str) -> None:
        """Fails unless Prometheus has ``alert`` (with these labels) neither pending nor firing:
        a fault's alert must be one the fault caused."""
        selector = ",".join([f'alertname="{alert}"', *(f'{k}="{v}"' for k, v in labels.items())])
        active = await self.query(f"ALERTS{{{selector}}}")
        assert not active, f"{alert} {labels} already active before the fault: {active}"

    async def others(self, since: float, alert: str) -> list[str]:
        return sorted({f"{e.name} {e.status}" for e in await self.events(since) if e.name != alert})

    # -- the scenarios -------------------------------------------------------------------

    async def worker_down(self) -> dict[str, Any]:
        assert self.shipper is not None, "start() first"
        alert, instance = "AichatProcessDown", f"127.0.0.1:{self.shipper.port}"
        await self.not_firing(alert, instance=instance)
        killed = time.time()
        self.shipper.kill9()
        fired = await self.notified(alert, "firing", killed, FIRE_TIMEOUT_S, instance=instance)
        restarted = time.time()
        self.shipper.start()
        await self.shipper.ready()
        ready = time.time()
        resolved = await self.notified(alert, "resolved", restarted, RESOLVE_TIMEOUT_S,
                                       instance=instance)
        return {"alert": alert, "fault": "shipper worker SIGKILLed, then started again",
                "fired_s": fired.received_at - killed, "recovery_s": ready - restarted,
                "resolved_s": resolved.received_at - restarted,
                "also_notified": await self.others(killed, alert)}

    async def shipper_lag(self, records: int = LAG_RECORDS) -> dict[str, Any]:
        alert = "AichatConsumerLagGrowing"
        prefix = self.system.env["AICHAT_TOPIC_PREFIX"]
        labels = {"group": self.group, "topic": f"{prefix}documents"}
        # consuming, nothing much owed (its own log records trickle in): the start line
        await self.until(lambda: self.value(f'max(aichat:consumer_lag_messages:sum{{group="{self.group}"}}) < 50'),
                         120, "the shipper caught up")
        await self.not_firing(alert, **labels)
        stopped = time.time()
        await asyncio.to_thread(stack.down, self.settings, services=["elasticsearch"])
        await self.publish(records)
        published = time.time()
        fired = await self.notified(alert, "firing", stopped, FIRE_TIMEOUT_S, **labels)
        restarted = time.time()
        await asyncio.to_thread(stack.up, self.settings, services=["elasticsearch"])
        back = time.time()

        async def caught_up() -> tuple[int, float]:
            return await self.until(self.all_shipped, RESOLVE_TIMEOUT_S, "every record shipped"), time.time()

        (shipped, shipped_at), resolved = await asyncio.gather(
            caught_up(), self.notified(alert, "resolved", restarted, RESOLVE_TIMEOUT_S, **labels))
        return {"alert": alert, "fault": f"Elasticsearch stopped, {records} records published",
                "fired_s": fired.received_at - stopped, "published_s": published - stopped,
                "recovery_s": back - restarted, "caught_up_s": shipped_at - restarted,
                "resolved_s": resolved.received_at - restarted,
                "shipped": shipped, "also_notified": await self.others(stopped, alert)}

    async def publish(self, n: int) -> None:
        events = [DocumentEvent(doc_id=f"alert-drill/{self.records + i}", version=1,
                                title="drill", text=f"record {self.records + i}") for i in range(n)]
        async with DocumentPublisher(self.system.settings()) as publisher:
            async for delivery in publisher.publish_many(events):
                assert delivery.ok, delivery
        self.records += n

    async def all_shipped(self) -> int | None:
        """The count of published documents in Elasticsearch once it is all of them."""
        index = self.system.env["AICHAT_ELASTIC_INDEX_PREFIX"]
        async with httpx.AsyncClient(base_url=self.settings.elastic_url, timeout=10) as es:
            await es.post(f"/{index}-*/_refresh")
            response = await es.get(f"/{index}-*/_count",
                                    params={"q": 'event.dataset:"aichat.documents"'})
        count = int(response.json().get("count", -1)) if response.status_code == 200 else -1
        return count if count == self.records else None


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the printed table: alert, fault, fired after, recovered in, resolved after."""
    return [[r["alert"], r["fault"], f"{r['fired_s']:.1f}", f"{r['recovery_s']:.1f}",
             f"{r['resolved_s']:.1f}"] for r in rows]


TABLE_HEADER = ["alert", "fault", "fired after (s)", "recovery (s)", "resolved after (s)"]
