"""Chunk counts and sizes per corpus and embedding model's tokenizer (no model weights).

    .venv/bin/python -m bench.chunk_sizes

Chunks are measured in the model's own tokens (streams/chunking). all-MiniLM-L6-v2's
English WordPiece vocabulary cuts Hangul into near-character pieces, so the same token
budget holds far fewer Korean characters than with multilingual-e5-small's XLM-R
SentencePiece vocabulary. Saved to ``bench/results/chunk_sizes.json``.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import orjson

from bench.common import RESULTS, machine_info, print_table
from bench.eval import EVAL_ROOT
from bench.ingest import load_corpus
from streams.agents.chunker import make_chunks
from streams.chunking import load_token_counter
from streams.config import WorkerSettings, load_settings
from streams.models import CATALOGUE


def main() -> int:
    settings = load_settings(WorkerSettings)
    rows: list[dict[str, Any]] = []
    for corpus in ("belebele_kor", "scifact"):
        docs = load_corpus(EVAL_ROOT / corpus / "corpus.jsonl", None)
        for model in CATALOGUE:
            counter = load_token_counter(model, settings.model_cache_dir)
            chunks = [c for d in docs for c in make_chunks(
                d, counter=counter, max_tokens=settings.chunk_max_tokens,
                overlap_tokens=settings.chunk_overlap_tokens)]
            chars = [len(c.text) for c in chunks]
            tokens = [counter.count(c.text) for c in chunks[:2000]]
            rows.append({"corpus": corpus, "model": model, "documents": len(docs), "chunks": len(chunks),
                         "chunks_per_doc": round(len(chunks) / len(docs), 2),
                         "chars_median": statistics.median(chars), "chars_mean": round(statistics.mean(chars), 1),
                         "tokens_mean": round(statistics.mean(tokens), 1),
                         "chars_per_token": round(sum(chars[:2000]) / sum(tokens), 2)})
            print(rows[-1], flush=True)
    print_table(["corpus", "model", "docs", "chunks", "chunks/doc", "chars median", "tokens mean", "chars/token"],
                [(r["corpus"], r["model"], r["documents"], r["chunks"], r["chunks_per_doc"], r["chars_median"],
                  r["tokens_mean"], r["chars_per_token"]) for r in rows])
    out = RESULTS / "chunk_sizes.json"
    out.write_bytes(orjson.dumps({"max_tokens": settings.chunk_max_tokens,
                                  "overlap_tokens": settings.chunk_overlap_tokens, "rows": rows,
                                  "machine": machine_info()}, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
