"""Calibrate the extractive generator's ``answer_min_similarity`` on the eval sets' train splits.

    .venv/bin/python -m bench.calibrate_answers [--scifact-docs 600]

For each train question the cosine similarity of its vector to the closest passage of a
corpus is taken, with the default model and its prompts (in process: this measures the
model's similarity scale, not retrieval): *answerable* when the corpus holds its relevant
passage (Belebele-kor questions over Belebele, SciFact questions over SciFact), *unanswerable*
when it does not (each set's questions over the other set's corpus). A threshold then
suppresses the answerable ones below it and lets through the unanswerable ones above it;
the table shows both rates per threshold, and the chosen one (the lowest that lets at most 5 %
of unanswerable questions through). Saved to ``bench/results/calibrate_answers.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.common import RESULTS, machine_info, print_table
from bench.eval import EVAL_ROOT, load_qrels, load_queries
from streams.config import ModelSettings, load_settings
from streams.embedding import create_embedder

THRESHOLDS = [round(0.70 + 0.01 * i, 2) for i in range(21)]
MAX_UNANSWERABLE_SHOWN = 0.05


def corpus(path: Path, limit: int | None) -> tuple[list[str], list[str]]:
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    return [str(r["_id"]) for r in rows], [f"{r.get('title', '')}\n{r['text']}".strip() for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact-docs", type=int, default=600, help="SciFact passages encoded")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibrate_answers.json")
    args = parser.parse_args(argv)
    settings = load_settings(ModelSettings)
    embedder = create_embedder(settings)  # the workers' backend
    embedder.load()
    sets: dict[str, dict[str, Any]] = {}
    for name, limit in (("belebele_kor", None), ("scifact", args.scifact_docs)):
        data = EVAL_ROOT / name
        ids, texts = corpus(data / "corpus.jsonl", limit)
        queries = load_queries(data / "queries_all.jsonl")
        train = {q: rel for q, rel in load_qrels(data / "qrels" / "train.tsv").items()
                 if q in queries and set(rel) & set(ids)}
        sets[name] = {"ids": ids, "passages": embedder.embed_sync(texts),
                      "questions": embedder.embed_sync([queries[q] for q in train], embedder.prompts.query),
                      "relevant": [set(rel) for rel in train.values()]}
        print(f"{name}: {len(ids)} passages, {len(train)} train questions", flush=True)
    answerable: list[float] = []
    unanswerable: list[float] = []
    for name, own in sets.items():
        other = next(s for n, s in sets.items() if n != name)
        sims = own["questions"] @ own["passages"].T
        for row, relevant in zip(sims, own["relevant"], strict=True):
            top = int(np.argmax(row))
            if own["ids"][top] in relevant:  # retrieval found it: would the answer be shown?
                answerable.append(float(row[top]))
        unanswerable += [float(s) for s in (own["questions"] @ other["passages"].T).max(axis=1)]
    rows = []
    for t in THRESHOLDS:
        suppressed = sum(s < t for s in answerable) / len(answerable)
        shown = sum(s >= t for s in unanswerable) / len(unanswerable)
        rows.append({"threshold": t, "answerable_suppressed": round(suppressed, 4),
                     "unanswerable_shown": round(shown, 4)})
    chosen = next((r for r in rows if r["unanswerable_shown"] <= MAX_UNANSWERABLE_SHOWN), rows[-1])
    result = {"model": settings.embed_model, "chosen": chosen, "rows": rows,
              "answerable": len(answerable), "unanswerable": len(unanswerable),
              "answerable_similarity_p10_p50": [round(float(np.percentile(answerable, p)), 4) for p in (10, 50)],
              "unanswerable_similarity_p50_p95": [round(float(np.percentile(unanswerable, p)), 4) for p in (50, 95)],
              "machine": machine_info()}
    print_table(["threshold", "answerable suppressed", "unanswerable shown"],
                [(r["threshold"], r["answerable_suppressed"], r["unanswerable_shown"]) for r in rows])
    print(f"chosen: {chosen}")
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
