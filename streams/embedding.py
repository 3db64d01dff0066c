"""Sentence embeddings behind the :class:`Embedder` Protocol.

The model runs off the event loop, in one dedicated thread (the runtime parallelises
inside a call; two concurrent calls would only fight for the same cores).
Vectors are L2-normalised float32, so cosine similarity is a dot product.
Documents and questions get the prompts the model's authors specify (e5:
"passage: " and "query: "; streams/models), so :meth:`Embedder.embed` (passages)
and :meth:`Embedder.embed_queries` are two calls.

Two backends (``embed_backend``), one behaviour: :func:`create_embedder` picks

    OnnxEmbedder                 "onnx" / "onnx-int8": ONNX Runtime over the files of
                                 streams/models/onnx.py, tokenizers and numpy; no torch
    SentenceTransformerEmbedder  "torch": sentence-transformers; also every model or
                                 device the ONNX files do not cover (logged)

Both tokenize as sentence-transformers does (the prompt, then truncation at the
model's max_seq_length), sort the texts by length and run ``embed_batch_size`` at a
time, mean-pool every token and L2-normalise.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from streams.batching import MicroBatcher
from streams.config import ModelSettings
from streams.models import CATALOGUE, Prompts, prompts_for, resolve_model_path

log = logging.getLogger(__name__)


class Embedder(Protocol):
    model_name: str
    dim: int

    @property
    def ready(self) -> bool:
        """The model is loaded (the worker's readiness shows it)."""
        ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages (chunks): (len(texts), dim) float32, L2-normalised."""
        ...

    async def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions, with the model's query prompt: (len(texts), dim) float32, L2-normalised."""
        ...

    async def embed_query(self, text: str) -> np.ndarray:
        """One question, (dim,): concurrent calls share one model call (micro-batched)."""
        ...


def model_prompts(settings: ModelSettings) -> Prompts:
    """The catalogue's prompts for the model, each replaced by a setting when one is given."""
    known = prompts_for(settings.embed_model)
    return Prompts(
        query=known.query if settings.embed_query_prompt is None else settings.embed_query_prompt,
        passage=known.passage if settings.embed_passage_prompt is None else settings.embed_passage_prompt,
    )


class ModelEmbedder:
    """Loads once in :meth:`start`; :meth:`embed` runs inference in a worker thread.

    A backend implements :meth:`load` (blocking, sets :attr:`dim`, warms up) and
    :meth:`embed_sync`; everything async is here.
    """

    backend = ""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.model_name = settings.embed_model
        self.dim = 0
        self.prompts = model_prompts(settings)
        self._queries: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._query_rows, max_size=settings.embed_query_batch_max,
            max_wait_s=settings.embed_query_wait_ms / 1000,
        )
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Blocking load (tests and benchmarks call it directly)."""
        raise NotImplementedError

    def embed_sync(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """Passages unless ``prompt`` is given (the query prompt for questions)."""
        raise NotImplementedError

    def _loaded(self, started: float, where: str) -> None:
        # the first call pays the runtime's one-off setup (allocation, kernel choice): pay
        # it here, before readiness turns green, not in the first batch or question
        self.embed_sync(["warm-up"], self.prompts.query)
        log.info("loaded embedding model %s (dim %d, %s, %s) in %.1fs", self.model_name, self.dim,
                 self.backend, where, time.perf_counter() - started)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._model = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._run(texts, self.prompts.passage)

    async def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return await self._run(texts, self.prompts.query)

    async def embed_query(self, text: str) -> np.ndarray:
        return await self._queries.submit(text)

    async def _query_rows(self, texts: list[str]) -> list[np.ndarray]:
        return list(await self.embed_queries(texts))

    async def _run(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        if self._executor is None:
            raise RuntimeError("embedder used before start()")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_sync, texts, prompt)


class SentenceTransformerEmbedder(ModelEmbedder):
    """sentence-transformers on torch (``embed_backend="torch"``)."""

    backend = "torch"

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer  # heavy: imported on use

        started = time.perf_counter()
        if self.settings.embed_threads:
            import torch

            torch.set_num_threads(self.settings.embed_threads)
        path = resolve_model_path(self.model_name, self.settings.model_cache_dir)
        self._model = SentenceTransformer(path, device=self.settings.embed_device)
        self.dim = int(self._model.get_embedding_dimension())
        self._loaded(started, self.settings.embed_device)

    def embed_sync(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("embedder used before load()")
        vectors = self._model.encode(
            list(texts),
            prompt=self.prompts.passage if prompt is None else prompt,
            batch_size=self.settings.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class OnnxEmbedder(ModelEmbedder):
    """ONNX Runtime on the CPU (``embed_backend="onnx"`` or ``"onnx-int8"``), without torch.

    The word-embedding table is a memory-mapped ``.npy``: this class looks the tokens
    up, the graph does the rest (streams/models/onnx.py).
    """

    def __init__(self, settings: ModelSettings, *, int8: bool = False, arena: bool = True) -> None:
        super().__init__(settings)
        self.int8 = int8
        # ONNX Runtime's CPU memory arena keeps the largest batch's activations (~250 MB at
        # 16 × 400 tokens) but spares each call its allocations: without it, passages cost
        # ~1.3-1.5x the CPU (bench/backends.py: onnx-no-arena vs onnx), so it stays on
        self.arena = arena
        self.backend = "onnx-int8" if int8 else "onnx"
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._max_tokens = 0

    def load(self) -> None:
        import onnxruntime as ort

        from streams.chunking.tokenizer import load_token_counter
        from streams.models.onnx import onnx_files

        started = time.perf_counter()
        files = onnx_files(self.model_name, self.settings.model_cache_dir)
        meta = files.meta
        # the chunker's tokenizer, the same file: one copy per process, not two
        counter = load_token_counter(self.model_name, self.settings.model_cache_dir)
        table = np.load(files.embeddings, mmap_mode="r")
        mapped = getattr(table, "_mmap", None)  # numpy's memmap keeps its mmap.mmap here
        if mapped is not None and hasattr(mapped, "madvise"):
            # no read-ahead: a looked-up row makes its own page resident, not its neighbours'
            mapped.madvise(mmap.MADV_RANDOM)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.settings.embed_threads  # 0 = one per physical core
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = self.arena
        # idle pool threads must sleep, not spin: on a machine whose cores Kafka, Weaviate
        # and the other workers share, spinning burns the CPU they need (and shows up as
        # CPU time per question, not speed)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings go to stderr, not our logs
        session = ort.InferenceSession(str(files.graph(self.int8)), options, providers=["CPUExecutionProvider"])
        self._table = table
        self._tokenizer, self._max_tokens = counter.tokenizer, counter.max_tokens
        self._model = session
        self.dim = int(meta["dim"])
        self._loaded(started, "cpu")

    def embed_sync(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        if self._model is None or self._table is None:
            raise RuntimeError("embedder used before load()")
        prefix = self.prompts.passage if prompt is None else prompt
        # the shared tokenizer has truncation off: truncate to max_seq_length less the
        # special tokens, then add them, as a truncating tokenizer does
        encodings = self._tokenizer.encode_batch([prefix + text for text in texts], add_special_tokens=False)
        for encoding in encodings:
            encoding.truncate(self._max_tokens)
        encodings = [self._tokenizer.post_process(e) for e in encodings]
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # longest first, stable
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        size = self.settings.embed_batch_size
        for at in range(0, len(order), size):
            rows = order[at:at + size]
            ids = np.zeros((len(rows), lengths[rows[0]]), dtype=np.int64)
            mask = np.zeros_like(ids)
            for j, i in enumerate(rows):
                ids[j, :lengths[i]] = encodings[i].ids
                mask[j, :lengths[i]] = 1
            # padding rows look up token 0; the mask keeps them out of attention and pooling
            (vectors,) = self._model.run(None, {"inputs_embeds": self._table[ids], "attention_mask": mask})
            out[rows] = vectors
        return out


def create_embedder(settings: ModelSettings) -> ModelEmbedder:
    """The embedder of ``embed_backend``; torch where ONNX does not cover the model or device."""
    if settings.embed_backend == "torch":
        return SentenceTransformerEmbedder(settings)
    if settings.embed_model not in CATALOGUE or settings.embed_device != "cpu":
        log.warning("embed_backend %s runs packaged models on the CPU only; %s on %s runs on torch",
                    settings.embed_backend, settings.embed_model, settings.embed_device)
        return SentenceTransformerEmbedder(settings)
    return OnnxEmbedder(settings, int8=settings.embed_backend == "onnx-int8")
