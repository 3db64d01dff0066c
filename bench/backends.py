"""The embedding model's inference backends side by side, each in a fresh process.

    flock /tmp/aichat-bench.lock .venv/bin/python -m bench.backends [--passages 256] [--only onnx torch]

For every backend (``torch``, ``onnx``, ``onnx-int8``; ``onnx-no-arena`` = ``onnx``
without ONNX Runtime's CPU memory arena; ``openvino`` over the same ONNX file when the
``openvino`` package can be imported, e.g. from ``--openvino-path``), one child
process loads the model the way a worker does and measures

* load: seconds and RSS after it (the imports included: torch alone is hundreds of MB)
* passages/s over SciFact chunks at the chunker's size (~400 tokens, the passage prompt)
  and the CPU seconds they took (user + system, every thread)
* question latency alone (median of ``--rounds``) and per question in a batch of 32
* RSS after encoding and its peak (VmHWM)

``torch`` is measured in the same run; the ratios to it are top-level keys.
Results: ``bench/results/backends.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, machine_info, print_table

BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-no-arena", "openvino")
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "corpus.jsonl"
QUESTIONS = (
    "How much protein should a female eat per day?",
    "원격 근무는 일주일에 며칠 가능한가요?",
    "Does vitamin D supplementation reduce fracture risk?",
    "서울의 인구는 얼마나 되나요?",
    "What is the role of microRNA in cancer metastasis?",
    "연차 휴가는 며칠인가요?",
    "Is obesity associated with increased mortality?",
    "환불 정책은 어떻게 되나요?",
)


def memory() -> dict[str, float]:
    """This process's resident memory now and at its peak (MiB)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def chunks(n: int, settings: Any) -> list[str]:
    """The first ``n`` chunks the chunker cuts from SciFact, longest documents first."""
    from bench.ingest import load_corpus, pipeline_chunks

    docs = sorted(load_corpus(CORPUS, None), key=lambda d: -len(d.text))[: n * 2]
    return pipeline_chunks(docs, settings)[:n]


def make_embedder(backend: str, settings: Any) -> Any:
    from streams.embedding import OnnxEmbedder, create_embedder

    if backend == "onnx-no-arena":
        return OnnxEmbedder(settings, arena=False)
    if backend == "openvino":
        return openvino_embedder(settings)
    return create_embedder(settings.model_copy(update={"embed_backend": backend}))


def child(backend: str, n_passages: int, rounds: int, out: Path) -> None:
    from streams.config import WorkerSettings, load_settings

    settings = load_settings(WorkerSettings)
    texts = chunks(n_passages, settings)  # the chunker: its tokenizer is in a worker too
    base = memory()["VmRSS"]
    started = time.perf_counter()
    embedder = make_embedder(backend, settings)
    embedder.load()
    load_s = time.perf_counter() - started
    after_load = memory()
    cpu, started = cpu_seconds(), time.perf_counter()
    vectors = embedder.embed_sync(texts)
    encode_s, encode_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    after_encode = memory()
    alone = []
    for i in range(rounds):
        t = time.perf_counter()
        embedder.embed_sync([QUESTIONS[i % len(QUESTIONS)]], embedder.prompts.query)
        alone.append(time.perf_counter() - t)
    batch = [QUESTIONS[i % len(QUESTIONS)] + f" ({i})" for i in range(32)]
    batched = []
    for _ in range(max(3, rounds // 6)):
        t = time.perf_counter()
        embedder.embed_sync(batch, embedder.prompts.query)
        batched.append((time.perf_counter() - t) / 32)
    np.save(out.with_suffix(".npy"), vectors[:64])
    out.write_text(json.dumps({
        "backend": getattr(embedder, "backend", backend), "model": settings.embed_model,
        "load_s": round(load_s, 2), "rss_before_load_mb": base,
        "rss_after_load_mb": after_load["VmRSS"], "rss_after_encode_mb": after_encode["VmRSS"],
        "rss_peak_mb": after_encode["VmHWM"],
        "passages": len(texts), "passages_per_s": round(len(texts) / encode_s, 2),
        "encode_cpu_s": round(encode_cpu, 1), "encode_wall_s": round(encode_s, 1),
        "question_alone_ms": round(statistics.median(alone) * 1000, 1),
        "question_in_32_ms": round(statistics.median(batched) * 1000, 2),
    }))


def openvino_embedder(settings: Any) -> Any:
    """The ONNX backend with OpenVINO's CPU plugin instead of ONNX Runtime (measured only)."""
    from streams.embedding import OnnxEmbedder

    class _OpenVino(OnnxEmbedder):
        def load(self) -> None:
            import openvino as ov
            from tokenizers import Tokenizer

            from streams.models.onnx import onnx_files

            started = time.perf_counter()
            files = onnx_files(self.model_name, self.settings.model_cache_dir)
            tokenizer = Tokenizer.from_file(str(files.tokenizer))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=int(files.meta["max_seq_length"]))
            compiled = ov.Core().compile_model(str(files.graph(False)), "CPU",
                                               {"PERFORMANCE_HINT": "LATENCY"})
            request = compiled.create_infer_request()

            class Session:  # the one method OnnxEmbedder calls
                def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                    result = request.infer(feeds)
                    return [np.asarray(result[compiled.output(0)])]

            self._table = np.load(files.embeddings, mmap_mode="r")
            self._tokenizer, self._model, self.dim = tokenizer, Session(), int(files.meta["dim"])
            self.backend = "openvino"
            self._loaded(started, "cpu")

    return _OpenVino(settings)


def run_child(backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    out = work / f"{backend}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if backend == "openvino" and args.openvino_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.openvino_path), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "bench.backends", "--child", backend, "--passages", str(args.passages),
            "--rounds", str(args.rounds), "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0:
        print(f"{backend}: failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    print(f"{backend}: {result}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--openvino-path", type=Path, default=None,
                        help="a directory with the openvino package (pip install --target), not a dependency")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "backends.json")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.passages, args.rounds, args.out)
        return 0
    backends = ["torch", *[b for b in args.only if b != "torch"]]  # the baseline, always
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            result = run_child(backend, args, Path(tmp))
            if result is not None:
                results[backend] = result
        if "torch" not in results:
            raise SystemExit("torch, the baseline, failed")
        reference = np.load(Path(tmp) / "torch.npy")
        for backend in results:
            mine = np.load(Path(tmp) / f"{backend}.npy")
            results[backend]["min_cosine_to_torch"] = round(float((mine * reference).sum(1).min()), 6)
    torch = results["torch"]
    ratios = {
        f"{b}_vs_torch": {
            "passages_per_s": round(r["passages_per_s"] / torch["passages_per_s"], 2),
            "question_alone": round(torch["question_alone_ms"] / r["question_alone_ms"], 2),
            "question_in_32": round(torch["question_in_32_ms"] / r["question_in_32_ms"], 2),
            "rss_after_encode": round(r["rss_after_encode_mb"] / torch["rss_after_encode_mb"], 2),
        }
        for b, r in results.items() if b != "torch"
    }
    headers = ["backend", "load s", "RSS load MB", "RSS encoded MB", "peak MB", "passages/s", "CPU s",
               "question ms", "in 32 ms/q", "min cos"]
    keys = ["load_s", "rss_after_load_mb", "rss_after_encode_mb", "rss_peak_mb", "passages_per_s",
            "encode_cpu_s", "question_alone_ms", "question_in_32_ms", "min_cosine_to_torch"]
    print_table(headers, [[b, *(r[k] for k in keys)] for b, r in results.items()])
    report = {"model": torch["model"], "passages": torch["passages"], "rounds": args.rounds,
              **ratios, "backends": results, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
