"""The trainer's input pipeline: token ids computed once and cached on disk, batches of
similar length (little padding), and a collator that only pads and stacks.

Issue 17 part 2 measured the old path input-bound on a GPU: every batch was tokenised in
the training loop, in one process, with random-length batches padded to their longest
sentence. Here:

- `cached_token_ids` tokenises every distinct training text once with the student's own
  tokenizer (the same call the trainer made per batch) and keeps the ids next to the
  teacher cache, keyed by the tokenizer's content, `max_seq_length` and the text list;
- `LengthBucketBatchSampler` shuffles, cuts the order into chunks of `chunk_batches`
  batches, sorts each chunk by length, cuts batches and shuffles the batch order: seeded
  by (seed, epoch), every sample exactly once per epoch, so `--resume` replays the order;
- `PretokenizedCollator` turns a batch of row indices into padded tensors and the
  teacher's target vectors (no tokeniser, no per-row Python lists of floats);
- `encode_token_ids` is `model.encode` from the cached ids: the projection fit encodes the
  training texts with it, so they are tokenised once per run, not twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

log = logging.getLogger(__name__)
COLUMN = "sentence"  # the text column name the loss's features are collected under


# ---------------------------------------------------------------- token ids


@dataclass
class TokenizedTexts:
    """Ragged token ids: text `i` is `ids[offsets[i]:offsets[i + 1]]` (int32)."""

    ids: np.ndarray  # int32 [total tokens]
    offsets: np.ndarray  # int64 [n + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def take(self, rows: Sequence[int]) -> TokenizedTexts:
        """The ids of texts `rows`, in that order (a new TokenizedTexts)."""
        pieces = [self[i] for i in rows]
        lengths = np.array([len(piece) for piece in pieces], dtype=np.int64)
        offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
        return TokenizedTexts(ids.astype(np.int32, copy=False), offsets)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text (int64 [n]), special tokens included."""
        return np.diff(self.offsets)


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of what decides the ids: the fast tokenizer's serialisation (vocab,
    normaliser, pre-tokeniser, post-processor; not its per-call truncation and padding),
    else the class, name and vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # without the truncation and padding transformers sets on the backend per call (the
        # first `preprocess` changes them: the key must not), max_seq_length is in the key
        serialised = json.loads(backend.to_str())
        serialised.pop("truncation", None)
        serialised.pop("padding", None)
        text = json.dumps(serialised, sort_keys=True)
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        text = json.dumps([type(tokenizer).__name__, tokenizer.name_or_path, vocab])
    text += f"|{getattr(tokenizer, 'padding_side', 'right')}"
    return hashlib.sha256(text.encode()).hexdigest()


def token_cache_key(tokenizer, max_seq_length: int, texts: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{tokenizer_fingerprint(tokenizer)}|{max_seq_length}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def tokenize_texts(model, texts: Sequence[str], chunk: int = 2048) -> TokenizedTexts:
    """Ids exactly as `model.preprocess` (what the trainer calls per batch) gives them,
    truncated to `model.max_seq_length`, with the padding stripped. ValueError if the
    tokenizer sets non-zero token type ids (the collator rebuilds them as zeros, as for
    every single-sentence input)."""
    pieces, lengths = [], []
    for start in range(0, len(texts), chunk):
        features = model.preprocess(list(texts[start : start + chunk]))
        types = features.get("token_type_ids")
        if types is not None and bool(types.any()):
            raise ValueError("the tokenizer sets non-zero token_type_ids: cannot pre-tokenise")
        mask = features["attention_mask"].bool()
        ids = features["input_ids"]
        for row in range(ids.shape[0]):
            kept = ids[row][mask[row]].numpy().astype(np.int32)
            pieces.append(kept)
            lengths.append(len(kept))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return TokenizedTexts(flat, offsets)


def cached_token_ids(model, texts: Sequence[str], cache_dir: Path) -> TokenizedTexts:
    """`tokenize_texts`, read from `cache_dir/tokens-<key>.npz` when a run with the same
    tokenizer, max_seq_length and texts wrote it; written there otherwise."""
    tokenizer = model.tokenizer
    cache_dir = Path(cache_dir)
    key = token_cache_key(tokenizer, model.max_seq_length, texts)
    path = cache_dir / f"tokens-{key}.npz"
    if path.exists():
        with np.load(path) as stored:
            tokens = TokenizedTexts(stored["ids"], stored["offsets"])
        if len(tokens) == len(texts):
            log.info("token ids: %d texts loaded from cache %s", len(texts), path)
            return tokens
        log.warning("token cache %s has the wrong size; recomputing", path)
    log.info("token ids: tokenising %d texts once", len(texts))
    tokens = tokenize_texts(model, texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=tokens.ids, offsets=tokens.offsets)
    tmp.replace(path)
    return tokens


# ---------------------------------------------------------------- batching


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, chunk_batches: int, seed: int, drop_last: bool = False
) -> list[list[int]]:
    """Indices 0..n-1 in batches: shuffled (seeded), cut into chunks of `chunk_batches`
    batches, each chunk sorted by length and cut into batches, then the batch order
    shuffled. `chunk_batches` 0: plain shuffled batches. Every index appears exactly once
    (but for the incomplete batch when `drop_last`)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    if chunk_batches <= 0:
        batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    else:
        span = chunk_batches * batch_size
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches.extend(
                chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)
            )
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()  # the only short batch: the end of the last chunk
    return [batches[i] for i in rng.permutation(len(batches))]


class EpochRelay(torch.utils.data.Sampler):
    """The `sampler` attribute of a `LengthBucketBatchSampler` (the rows in order; its
    own `__iter__` never reads it). Under DDP accelerate wraps the batch sampler in a
    `BatchSamplerShard` and passes `set_epoch` only to `batch_sampler.batch_sampler.sampler`
    (`DataLoaderShard.set_epoch`), which was the dataset, so every epoch repeated the first
    epoch's batch order; this relays the call to the batch sampler."""

    def __init__(self, owner: LengthBucketBatchSampler) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.owner.lengths)))

    def __len__(self) -> int:
        return len(self.owner.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class LengthBucketBatchSampler(DefaultBatchSampler):
    """Batches of similar length for sentence-transformers' trainer (see
    `bucketed_batches`); reshuffled each epoch with seed + epoch (the trainer calls
    `set_epoch`), so a resumed run sees the same order as an uninterrupted one."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        lengths: np.ndarray,
        seed: int,
        chunk_batches: int,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        self.lengths = np.asarray(lengths)
        self.chunk_batches = chunk_batches
        self.sampler = EpochRelay(self)
        if len(self.lengths) != len(dataset):
            raise ValueError(f"{len(self.lengths)} lengths for {len(dataset)} rows")

    def __iter__(self) -> Iterator[list[int]]:
        yield from bucketed_batches(
            self.lengths,
            self.batch_size,
            self.chunk_batches,
            self.seed + self.epoch,
            self.drop_last,
        )

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


@dataclass
class BucketSamplerFactory:
    """What `SentenceTransformerTrainingArguments.batch_sampler` calls with (dataset,
    batch_size, drop_last, ...): a picklable callable (the trainer saves its arguments in
    every checkpoint) that reads the lengths from the dataset's `length` column."""

    seed: int
    chunk_batches: int

    def __call__(
        self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0
    ):
        return LengthBucketBatchSampler(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            lengths=np.asarray(dataset["length"]),
            seed=self.seed,
            chunk_batches=self.chunk_batches,
            valid_label_columns=valid_label_columns,
            generator=generator,
        )


# ---------------------------------------------------------------- collation


@dataclass
class PretokenizedCollator:
    """Rows `{"text": i, "target": j, "length": n}` -> the trainer's batch:
    `sentence_input_ids` / `sentence_attention_mask` (int64 [batch, longest]),
    `sentence_token_type_ids` (zeros) when the tokenizer uses them, and `label`
    (float32 [batch, dim], `targets[j]`)."""

    tokens: TokenizedTexts
    targets: np.ndarray  # float32 [distinct English sentences, dim]
    pad_id: int
    left_padding: bool = False
    token_type_ids: bool = False
    valid_label_columns: list[str] = field(default_factory=lambda: ["target"])

    @classmethod
    def for_model(cls, model, tokens: TokenizedTexts, targets: np.ndarray) -> PretokenizedCollator:
        return cls(
            tokens=tokens,
            targets=np.ascontiguousarray(targets, dtype=np.float32),
            **padding_of(model),
        )

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            return {}
        features = pad_sequences(
            [self.tokens[row["text"]] for row in rows],
            self.pad_id,
            self.left_padding,
            self.token_type_ids,
        )
        batch = {f"{COLUMN}_{name}": tensor for name, tensor in features.items()}
        batch["label"] = torch.from_numpy(self.targets[[row["target"] for row in rows]])
        return batch


def padding_of(model) -> dict[str, Any]:
    """How `model`'s tokenizer pads: `pad_id`, `left_padding`, `token_type_ids` (whether
    the model takes them)."""
    tokenizer = model.tokenizer
    return {
        "pad_id": tokenizer.pad_token_id or 0,
        "left_padding": getattr(tokenizer, "padding_side", "right") == "left",
        "token_type_ids": "token_type_ids" in tokenizer.model_input_names,
    }


def pad_sequences(
    sequences: Sequence[np.ndarray], pad_id: int, left_padding: bool, token_type_ids: bool
) -> dict[str, torch.Tensor]:
    """Token id sequences -> the model's features, as its tokenizer pads them:
    `input_ids` / `attention_mask` (int64 [batch, longest]) and `token_type_ids` (zeros)
    when the model takes them."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for i, sequence in enumerate(sequences):
        span = slice(longest - len(sequence), longest) if left_padding else slice(len(sequence))
        ids[i, span] = sequence
        mask[i, span] = 1
    features = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if token_type_ids:
        features["token_type_ids"] = torch.zeros_like(features["input_ids"])
    return features


def encode_token_ids(
    model, tokens: TokenizedTexts, batch_size: int = 128, show_progress_bar: bool = False
) -> np.ndarray:
    """`model.encode(texts)` (float32 [len(tokens), dim], in the order of `tokens`) for the
    texts whose ids `tokens` holds, without the tokenizer: batches of similar length,
    longest first (as `encode` cuts them), the model in eval mode, no gradients. `model`:
    a SentenceTransformer whose first module takes these ids (the student itself or
    `training.student.pooled_model` of it)."""
    from tqdm.auto import trange

    padding = padding_of(model)
    order = np.argsort(-tokens.lengths, kind="stable")
    vectors: np.ndarray | None = None
    model.eval()
    with torch.inference_mode():
        for start in trange(0, len(order), batch_size, disable=not show_progress_bar):
            batch = order[start : start + batch_size]
            features = pad_sequences([tokens[i] for i in batch], **padding)
            features = {name: tensor.to(model.device) for name, tensor in features.items()}
            embeddings = model(features)["sentence_embedding"].float().cpu().numpy()
            if vectors is None:
                vectors = np.empty((len(tokens), embeddings.shape[1]), dtype=np.float32)
            vectors[batch] = embeddings
    if vectors is None:
        return np.zeros((0, 0), dtype=np.float32)
    return vectors


def default_workers(device: str) -> int:
    """Data-loader workers when not set: 0 on CPU (collation is a few microseconds a row
    and every core is busy with the model), 2 on CUDA (keeps batches ready while the GPU
    works)."""
    return 2 if device == "cuda" else 0


# ---------------------------------------------------------------- the dataset


def distinct_texts(texts: Iterable[str]) -> list[str]:
    """Each text once, in first-occurrence order: the rows of the token-id cache."""
    return list(dict.fromkeys(texts))


def token_rows(texts: Iterable[str], tokens: TokenizedTexts) -> dict[str, int]:
    """Each distinct text's row in `tokens` (the ids of `distinct_texts(texts)`);
    ValueError when `tokens` holds another number of rows."""
    row_of = {text: i for i, text in enumerate(distinct_texts(texts))}
    if len(row_of) != len(tokens):
        raise ValueError(f"{len(tokens)} token id rows for {len(row_of)} distinct texts")
    return row_of


def build_inputs(
    model,
    samples: Sequence[tuple[str, str]],
    english: Sequence[str],
    vectors: np.ndarray,
    cache_dir: Path,
    pretokenize: bool = True,
    tokens: TokenizedTexts | None = None,
):
    """The trainer's dataset and collator for (text, english) `samples`, whose targets are
    `vectors[english.index(english)]` (float32 [len(english), dim]). `tokens`: the ids of
    `distinct_texts` of the samples' texts when the caller has them already
    (`cached_token_ids`); else they are read from (or written to) `cache_dir`.

    pretokenize: rows `text` (index into the cached token ids), `target` (row of
    `vectors`) and `length` (tokens, for the bucketed sampler), with a
    `PretokenizedCollator`. Otherwise the old text path: `sentence`/`label` rows and no
    collator (sentence-transformers tokenises every batch)."""
    from datasets import Dataset

    target_of = {sentence: i for i, sentence in enumerate(english)}
    if not pretokenize:
        data = {
            "sentence": [text for text, _ in samples],
            "label": [vectors[target_of[e]] for _, e in samples],
        }
        return Dataset.from_dict(data), None
    texts = distinct_texts(text for text, _ in samples)
    if tokens is None:
        tokens = cached_token_ids(model, texts, cache_dir)
    text_of = token_rows(texts, tokens)
    rows = np.fromiter((text_of[text] for text, _ in samples), dtype=np.int64, count=len(samples))
    dataset = Dataset.from_dict(
        {
            "text": rows,
            "target": np.fromiter((target_of[e] for _, e in samples), dtype=np.int64),
            "length": tokens.lengths[rows],
        }
    )
    return dataset, PretokenizedCollator.for_model(model, tokens, vectors)
