"""Chunking by the served model's own tokens, on sentence and paragraph boundaries."""

from __future__ import annotations

import pytest

from service.bulk.chunking import Chunker
from service.engine.pipeline import load_model

DOC = (
    "Solar panels turn sunlight into electricity. They work best in direct light. "
    "Efficiency drops when the panels are hot.\n\n"
    "Wind turbines use the kinetic energy of moving air. Larger blades capture more wind. "
    "Offshore farms see steadier winds than those on land.\n\n"
    "Hydroelectric dams store water in reservoirs. Der Strom fließt, wenn das Wasser fällt. "
    "北京是中国的首都。 Ünïcode survives the split too."
)


@pytest.fixture(scope="module")
def tokenizer(bundled_model):
    return load_model(bundled_model)[1]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer._full.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize(("tokens", "overlap"), [(24, 0), (40, 8), (12, 4)])
def test_chunks_fit_the_budget_and_offsets_point_into_the_document(tokenizer, tokens, overlap):
    chunks = Chunker(tokenizer._full.to_str(), tokens, overlap).chunks(DOC)
    assert len(chunks) > 1
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert DOC[chunk.start : chunk.end] == chunk.text
        assert 0 < _count(tokenizer, chunk.text) <= tokens
    # the chunks cover the document in order (trimmed whitespace aside)
    assert chunks[0].start == 0 and chunks[-1].end == len(DOC)
    assert all(a.start < b.start for a, b in zip(chunks, chunks[1:]))


def test_chunks_prefer_paragraph_then_sentence_boundaries(tokenizer):
    chunks = Chunker(tokenizer._full.to_str(), 40).chunks(DOC)
    paragraphs = DOC.split("\n\n")
    # every paragraph fits in 40 tokens: one chunk each, exactly the paragraphs
    assert [c.text for c in chunks] == paragraphs
    small = Chunker(tokenizer._full.to_str(), 14).chunks(DOC)
    ends = [c.text[-1] for c in small]
    assert sum(end in ".。" for end in ends) >= len(small) - 1  # they end on sentences


def test_overlap_repeats_text_between_neighbours(tokenizer):
    text = " ".join(f"word{i}" for i in range(200))  # no sentence boundaries at all
    chunks = Chunker(tokenizer._full.to_str(), 30, 10).chunks(text)
    assert any(a.end > b.start for a, b in zip(chunks, chunks[1:]))


@pytest.mark.parametrize(("tokens", "overlap", "message"), [
    (0, 0, "--chunk-tokens must be at least 1"),
    (10, 10, "--chunk-overlap must be at least 0 and less than --chunk-tokens"),
    (10, -1, "--chunk-overlap must be at least 0"),
])  # fmt: skip
def test_bad_chunk_options_are_refused(tokenizer, tokens, overlap, message):
    with pytest.raises(ValueError, match=message):
        Chunker(tokenizer._full.to_str(), tokens, overlap)
