"""Sentence embeddings behind the :class:`Embedder` Protocol.

The model runs off the event loop, in one dedicated thread (torch parallelises
inside a call; two concurrent calls would only fight for the same cores).
Vectors are L2-normalised float32, so cosine similarity is a dot product.
Documents and questions get the prompts the model's authors specify (e5:
"passage: " and "query: "; streams/models), so :meth:`Embedder.embed` (passages)
and :meth:`Embedder.embed_queries` are two calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from streams.batching import MicroBatcher
from streams.config import ModelSettings
from streams.models import Prompts, prompts_for, resolve_model_path

log = logging.getLogger(__name__)


class Embedder(Protocol):
    model_name: str
    dim: int

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


class SentenceTransformerEmbedder:
    """Loads once in :meth:`start`; :meth:`embed` runs inference in a worker thread."""

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
        from sentence_transformers import SentenceTransformer  # heavy: imported on use

        started = time.perf_counter()
        if self.settings.embed_threads:
            import torch

            torch.set_num_threads(self.settings.embed_threads)
        path = resolve_model_path(self.model_name, self.settings.model_cache_dir)
        self._model = SentenceTransformer(path, device=self.settings.embed_device)
        self.dim = int(self._model.get_embedding_dimension())
        # the first call pays torch's one-off setup (allocation, kernel choice): pay it
        # here, before readiness turns green, not in the first batch or question
        self.embed_sync(["warm-up"], self.prompts.query)
        log.info(
            "loaded embedding model %s (dim %d, %s) in %.1fs",
            self.model_name,
            self.dim,
            self.settings.embed_device,
            time.perf_counter() - started,
        )

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

    def embed_sync(self, texts: Sequence[str], prompt: str | None = None) -> np.ndarray:
        """Passages unless ``prompt`` is given (the query prompt for questions)."""
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
