"""``aichat experiments report NAME``: an experiment's variants compared, from Elasticsearch.

It reads the per-question summaries (``<prefix>-summaries``, streams/summaries.py)
whose ``aichat.experiment`` is NAME and gives, per variant:

* **questions** — summaries of the experiment with that variant (any outcome);
* **first token p50 / p95** — the answerer's ``timings_ms.first_token`` of answered ones;
* **no answer** — share of questions without an answer from the documents: the answer
  did not end with ``done``, found no source, or is the extractive generator's
  "nothing found" text (streams/generation.py);
* **feedback rate** — rated questions among the answered ones;
* **positive** — thumbs up among the rated ones;

each proportion with its 95 % Wilson interval. Every other variant is compared with
the control (``--control``; default: ``default`` if present, else the first by name):
the proportions by a two-proportion z-test, first-token times by a Mann–Whitney U
test (infra/experiments/stats.py); p < 0.05 is marked significant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.experiments.stats import ALPHA, Test, mann_whitney, percentile, two_proportions, wilson
from streams.config import ElasticSettings
from streams.elastic_sink import elastic_client
from streams.es_documents import summary_index
from streams.generation import NOTHING_FOUND

_FIELDS = ["aichat.variant", "aichat.outcome", "aichat.sources.doc_id", "aichat.answer",
           "aichat.timings_ms.first_token", "aichat.feedback.rating", "aichat.query_id"]
PAGE = 1_000


@dataclass
class Arm:
    """What one variant's questions add up to."""

    variant: str
    questions: int = 0
    answered: int = 0  # ended with done
    no_answer: int = 0
    rated: int = 0
    positive: int = 0
    first_token_ms: list[float] = field(default_factory=list)

    def add(self, summary: Mapping[str, Any]) -> None:
        a = summary.get("aichat") or {}
        self.questions += 1
        done = a.get("outcome") == "done"
        if done:
            self.answered += 1
            first = (a.get("timings_ms") or {}).get("first_token")
            if isinstance(first, int | float):
                self.first_token_ms.append(float(first))
            rating = (a.get("feedback") or {}).get("rating")
            if rating in (1, -1):
                self.rated += 1
                self.positive += rating == 1
        if not done or not a.get("sources") or str(a.get("answer", "")).strip() == NOTHING_FOUND:
            self.no_answer += 1

    def row(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "questions": self.questions,
            "answered": self.answered,
            "first_token_ms": {"p50": percentile(self.first_token_ms, 50),
                               "p95": percentile(self.first_token_ms, 95)},
            "no_answer": _rate(self.no_answer, self.questions),
            "feedback": _rate(self.rated, self.answered),
            "positive": _rate(self.positive, self.rated),
        }


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": wilson(k, n)}


def _test(test: Test | None) -> dict[str, Any] | None:
    if test is None:
        return None
    return {"statistic": round(test.statistic, 4), "p": test.p_value, "significant": test.significant}


def build_report(name: str, summaries: Iterable[Mapping[str, Any]],
                 control: str | None = None) -> dict[str, Any]:
    """The report of experiment ``name`` from its summaries (pure)."""
    arms: dict[str, Arm] = defaultdict(lambda: Arm(""))
    for s in summaries:
        variant = str((s.get("aichat") or {}).get("variant") or "default")
        arm = arms[variant]
        arm.variant = variant
        arm.add(s)
    names = sorted(arms)
    if control is None:
        control = "default" if "default" in arms else (names[0] if names else None)
    elif control not in arms:
        raise ValueError(f"control variant {control!r} has no questions in {name!r}: {names}")
    comparisons = []
    if control is not None:
        c = arms[control]
        for v in (n for n in names if n != control):
            b = arms[v]
            comparisons.append({
                "variant": v, "against": control,
                "first_token_ms": _test(mann_whitney(c.first_token_ms, b.first_token_ms)),
                "no_answer": _test(two_proportions(c.no_answer, c.questions, b.no_answer, b.questions)),
                "feedback": _test(two_proportions(c.rated, c.answered, b.rated, b.answered)),
                "positive": _test(two_proportions(c.positive, c.rated, b.positive, b.rated)),
            })
    return {"experiment": name, "control": control, "alpha": ALPHA,
            "variants": [arms[n].row() for n in names], "comparisons": comparisons,
            "tests": {"proportions": "two-proportion z-test (pooled), two-sided",
                      "first_token_ms": "Mann-Whitney U (normal approximation, ties corrected), two-sided",
                      "intervals": "Wilson score, 95%"}}


async def fetch_summaries(settings: ElasticSettings, name: str) -> list[dict[str, Any]]:
    """Every summary of experiment ``name`` (``search_after`` pages, by query id)."""
    client = elastic_client(settings)
    out: list[dict[str, Any]] = []
    try:
        after: list[Any] | None = None
        while True:
            page = await client.search(
                index=summary_index(settings.elastic_index_prefix), size=PAGE, source_includes=_FIELDS,
                query={"term": {"aichat.experiment": name}}, sort=[{"aichat.query_id": "asc"}],
                search_after=after, ignore_unavailable=True)
            hits = page["hits"]["hits"]
            out.extend(h["_source"] for h in hits)
            if len(hits) < PAGE:
                return out
            after = hits[-1]["sort"]
    finally:
        await client.close()


def _pct(rate: Mapping[str, Any]) -> str:
    if rate["rate"] is None:
        return "—"
    lo, hi = rate["ci95"]
    return f"{rate['rate'] * 100:5.1f}% [{lo * 100:.1f}–{hi * 100:.1f}] ({rate['k']}/{rate['n']})"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def render(report: Mapping[str, Any]) -> str:
    """The report as the text tables ``aichat experiments report`` prints."""
    lines = [f"experiment {report['experiment']} (control: {report['control']})", ""]
    header = ("variant", "questions", "first token p50/p95 ms", "no answer", "feedback rate", "positive")
    rows = [(v["variant"], str(v["questions"]),
             f"{_ms(v['first_token_ms']['p50'])} / {_ms(v['first_token_ms']['p95'])}",
             _pct(v["no_answer"]), _pct(v["feedback"]), _pct(v["positive"]))
            for v in report["variants"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    lines += ["", "95% Wilson intervals in brackets; differences against the control "
              f"(p < {report['alpha']}: significant):"]
    for c in report["comparisons"]:
        for metric in ("first_token_ms", "no_answer", "feedback", "positive"):
            t = c[metric]
            verdict = "not testable" if t is None else (
                f"p = {t['p']:.4f}, {'SIGNIFICANT' if t['significant'] else 'not significant'}")
            lines.append(f"  {c['variant']} vs {c['against']}: {metric}: {verdict}")
    if not report["comparisons"]:
        lines.append("  (fewer than two variants: nothing to compare)")
    lines += ["", f"tests: proportions — {report['tests']['proportions']}; "
              f"first token — {report['tests']['first_token_ms']}"]
    return "\n".join(lines)
