"""Split long documents into chunks of at most N of the served model's tokens, preferring
paragraph, then sentence, then word boundaries, with up to M tokens of overlap.

The splitting is `semantic-text-splitter` (Rust, `TextSplitter.from_huggingface_tokenizer`)
over the model's own `tokenizers.Tokenizer` (padding and truncation off, special tokens not
counted). Measured against a plain token-window splitter on the tokenizer's offsets in
docs/indexing.md ("Chunking").
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based within the document
    start: int  # first character (Python str index into the document text)
    end: int  # one past the last character
    text: str


class Chunker:
    """`chunks(text)`: the document as a list of Chunk; `tokens` is the chunk capacity in
    model tokens (without special tokens or prompt), `overlap` < `tokens`."""

    def __init__(self, tokenizer_json: str, tokens: int, overlap: int = 0) -> None:
        from semantic_text_splitter import TextSplitter

        if tokens < 1:
            raise ValueError(f"--chunk-tokens must be at least 1 (got {tokens})")
        if not 0 <= overlap < tokens:
            raise ValueError(
                f"--chunk-overlap must be at least 0 and less than --chunk-tokens ({tokens}); "
                f"got {overlap}"
            )
        tokenizer = Tokenizer.from_str(tokenizer_json)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokens, self.overlap = tokens, overlap
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, tokens, overlap=overlap, trim=True
        )

    def chunks(self, text: str) -> list[Chunk]:
        return [
            Chunk(index, start, start + len(piece), piece)
            for index, (start, piece) in enumerate(self._splitter.chunk_indices(text))
        ]


def whole(text: str) -> list[Chunk]:
    """No chunking: the document is one chunk (truncated by the pipeline like the server)."""
    return [Chunk(0, 0, len(text), text)]
