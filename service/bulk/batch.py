"""The batch function both engines run: documents -> chunks -> length-sorted batches through
the served pipeline -> output rows in document order.

`BatchEmbedder` builds the served pipeline once (`service.engine.pipeline.served_pipeline`,
the factory the server uses: same model folder, same ONNX variant, same pooling) and applies
prompts, truncation, normalisation and `dimensions` exactly as the server does
(`EmbeddingEngine.prompt_for` / `tokenize`, `service.engine.encoder.postprocess`). The
local engine calls `embed_documents` once per shard; the Ray engine's actors call it once
per Ray batch, so both give the same rows.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa

from service.bulk.chunking import Chunk, Chunker, whole
from service.bulk.prefetch import prefetched
from service.bulk.schema import output_schema
from service.config import Settings
from service.engine.encoder import postprocess
from service.engine.engine import BUNDLED_MODEL_NAME, UnknownPromptError
from service.engine.pipeline import ModelPipeline, served_pipeline
from service.engine.tokenizer import TokenizedText

K = TypeVar("K")

# texts sorted by token length together: this many batches (a window bounds the memory of
# tokenised texts and keeps the output order restorable per window). Padded over real tokens
# for 4,000 stsb-multi-mt short texts in batches of 32: windows of 512 texts 1.078, 1,024
# 1.038, 2,048 1.022, the whole corpus 1.011
SORT_WINDOW_BATCHES = 64
# a run's first window is this many batches: the inference threads start once a few batches
# are read and tokenised instead of a whole window (2,048 short texts: ~0.1 s idle at start)
FIRST_WINDOW_BATCHES = 4
# internal per-row columns the writer sums into the summary and drops
TOKENS, TRUNCATED, SKIPPED = "_tokens", "_truncated", "_skipped"


def window_sizes(batch_size: int, cap: int | None = None) -> Iterator[int]:
    """Texts per sort window, endless: FIRST_WINDOW_BATCHES batches first, then
    SORT_WINDOW_BATCHES batches; none above `cap` (e.g. the rows of a shard)."""
    cap = cap or batch_size * SORT_WINDOW_BATCHES
    yield min(batch_size * FIRST_WINDOW_BATCHES, cap)
    while True:
        yield min(batch_size * SORT_WINDOW_BATCHES, cap)


@dataclass(frozen=True)
class EmbedOptions:
    """What decides the rows and vectors (recorded in the manifest and the Parquet
    metadata; a resume with other values is refused)."""

    prompt_name: str | None = None
    normalize: bool | None = None  # None: as the model's own Normalize module says
    dimensions: int | None = None  # None: the model's dimension
    chunk_tokens: int | None = None  # None: no chunking (truncated like the server)
    chunk_overlap: int = 0
    include_text: bool = False
    batch_size: int = 32  # texts per forward pass (speed only)
    # batches computed at once, each on its own share of the cores (speed only; 0: auto,
    # `inference_workers`)
    inference_workers: int = 0

    def identity(self) -> dict:
        """The options that change the output (not batch_size, not inference_workers)."""
        values = asdict(self)
        values.pop("batch_size")
        values.pop("inference_workers")
        return values


def settings_overrides(**values) -> dict:
    """The Settings fields the job passes on (None values dropped): what a Ray actor needs
    to build the same pipeline."""
    return {key: value for key, value in values.items() if value is not None}


@dataclass
class ChunkRows:
    """Chunks of documents, column-wise, before embedding."""

    ids: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: ChunkRows) -> None:
        for name in ("ids", "doc_ids", "indices", "starts", "ends", "texts", "skipped"):
            getattr(self, name).extend(getattr(other, name))


@dataclass(frozen=True)
class PreparedRows:
    """Chunks with the texts to embed tokenised: `BatchEmbedder.prepare`'s output."""

    rows: ChunkRows
    skipped: np.ndarray  # bool [len(rows)]
    keep: np.ndarray  # int64 indices of the rows embedded
    items: list[TokenizedText]  # one per kept row


class BatchEmbedder:
    """The served pipeline plus the job's options. Raises ValueError (unknown prompt,
    `dimensions` above the model's, a chunk size that cannot fit the model's window)."""

    def __init__(self, settings: Settings, options: EmbedOptions) -> None:
        if options.inference_workers < 0:
            raise ValueError(
                f"--inference-workers {options.inference_workers}: must be 0 (auto) or more"
            )
        if options.inference_workers:
            settings = settings.model_copy(update={"inference_workers": options.inference_workers})
        self.settings, self.options = settings, options
        # batches at once, each on its share of the cores: the server's rule
        # (service.engine.workers), run by the pipeline (`ModelPipeline.embed_batches`)
        self.pipeline: ModelPipeline = served_pipeline(settings)
        self.workers = self.pipeline.workers
        spec, tokenizer = self.pipeline.spec, self.pipeline.tokenizer
        self.prompt = self._prompt(options.prompt_name)
        self.normalize = spec.normalize if options.normalize is None else options.normalize
        if options.dimensions is not None and not 1 <= options.dimensions <= spec.dimension:
            raise ValueError(
                f"--dimensions {options.dimensions}: must be between 1 and the model's "
                f"dimension ({spec.dimension})"
            )
        self.dim = options.dimensions or spec.dimension
        self.chunker = None
        if options.chunk_tokens is not None:
            reserved = tokenizer.encode([self.prompt])[0].length  # special tokens + prompt
            if options.chunk_tokens + reserved > tokenizer.max_length:
                raise ValueError(
                    f"--chunk-tokens {options.chunk_tokens}: a chunk plus the prompt and "
                    f"special tokens ({reserved}) exceeds the model's maximum of "
                    f"{tokenizer.max_length} tokens; use at most "
                    f"{tokenizer.max_length - reserved}"
                )
            self.chunker = Chunker(
                tokenizer._full.to_str(), options.chunk_tokens, options.chunk_overlap
            )
        self.schema = output_schema(self.dim, options.include_text)

    def _prompt(self, name: str | None) -> str:
        """The prompt text the server would prepend (EmbeddingEngine.prompt_for)."""
        spec = self.pipeline.spec
        name = name or self.settings.default_prompt_name or spec.default_prompt_name
        if name is None:
            return ""
        if name not in spec.prompts:
            raise UnknownPromptError(name, sorted(spec.prompts))
        return spec.prompts[name]

    def meta(self) -> dict:
        """Model name, fingerprint, variant, dimension and options (JSON-serialisable)."""
        from service.artifacts import read_fingerprint, source_fingerprint

        info = self.pipeline.backend.info
        if info.file:
            fingerprint = read_fingerprint(Path(info.file))
            variant = Path(info.file).name
        else:
            fingerprint = source_fingerprint(self.pipeline.spec.transformer_path)
            variant = f"{info.name}-{info.dtype}"
        return {
            "model": model_name(self.settings),
            "fingerprint": fingerprint,
            "variant": variant,
            "dim": self.dim,
            "options": {
                **self.options.identity(),
                "normalize": self.normalize,
                "prompt": self.prompt,
                "max_length": self.pipeline.tokenizer.max_length,
            },
            "backend": {"name": info.name, "device": info.device, "dtype": info.dtype},
        }

    # ------------------------------------------------------------ the batch function

    def split(self, text: str) -> list[Chunk]:
        return self.chunker.chunks(text) if self.chunker is not None else whole(text)

    def chunk_documents(self, doc_ids: list[str], texts: list[str]) -> ChunkRows:
        """The chunks of the documents, in order. An empty / whitespace-only document
        gives one row marked skipped (counted, never embedded or written)."""
        rows = ChunkRows()
        chunked = self.chunker is not None
        for doc_id, text in zip(doc_ids, texts):
            chunks = self.split(text) if text and text.strip() else []
            for chunk in chunks or [Chunk(0, 0, 0, "")]:
                rows.ids.append(f"{doc_id}#{chunk.index}" if chunked else doc_id)
                rows.doc_ids.append(doc_id)
                rows.indices.append(chunk.index)
                rows.starts.append(chunk.start)
                rows.ends.append(chunk.end)
                rows.texts.append(chunk.text)
                rows.skipped.append(not chunks)
        return rows

    def embed_documents(self, doc_ids: list[str], texts: list[str]) -> pa.Table:
        """The batch function: `embed_chunks(chunk_documents(doc_ids, texts))`."""
        return self.embed_chunks(self.chunk_documents(doc_ids, texts))

    def embed_chunks(self, rows: ChunkRows) -> pa.Table:
        """Output rows for `rows` (same order), window by window with the next window
        tokenised ahead (`embed_texts`): the Ray actors' call, one per Ray batch."""
        skipped = np.asarray(rows.skipped, dtype=bool)
        keep = np.flatnonzero(~skipped)
        embedded = self.embed_texts([rows.texts[i] for i in keep])
        return self._table(rows, skipped, keep, *embedded)

    def prepare(self, rows: ChunkRows) -> PreparedRows:
        """Tokenise the chunks to embed (the CPU work before inference, which the local job
        runs in its reader thread, one window ahead)."""
        skipped = np.asarray(rows.skipped, dtype=bool)
        keep = np.flatnonzero(~skipped)
        return PreparedRows(rows, skipped, keep, self.tokenize([rows.texts[i] for i in keep]))

    def embed_windows(
        self, windows: Iterable[tuple[K, PreparedRows]]
    ) -> Iterator[tuple[K, pa.Table]]:
        """(key, output rows) for each (key, window `prepare` made), in order: `stream`."""
        for (key, prepared), embedded in self.stream(
            ((key, prepared), prepared.items) for key, prepared in windows
        ):
            yield key, self._table(prepared.rows, prepared.skipped, prepared.keep, *embedded)

    def _table(
        self,
        rows: ChunkRows,
        skipped: np.ndarray,
        keep: np.ndarray,
        vectors: np.ndarray,
        tokens: np.ndarray,
        truncated: np.ndarray,
    ) -> pa.Table:
        """The output columns plus `_tokens` (int32: tokens fed to the model, prompt and
        special tokens included), `_truncated` (bool) and `_skipped` (bool; such rows have
        a zero vector and are dropped by the writer); `vectors` etc. are the kept rows'."""
        n = len(rows.ids)
        all_vectors = np.zeros((n, self.dim), np.float32)
        all_tokens = np.zeros(n, np.int32)
        all_truncated = np.zeros(n, bool)
        all_vectors[keep], all_tokens[keep], all_truncated[keep] = vectors, tokens, truncated
        columns = {
            "id": pa.array(rows.ids, pa.string()),
            "doc_id": pa.array(rows.doc_ids, pa.string()),
            "chunk_index": pa.array(rows.indices, pa.int32()),
            "char_start": pa.array(rows.starts, pa.int64()),
            "char_end": pa.array(rows.ends, pa.int64()),
        }
        if self.options.include_text:
            columns["text"] = pa.array(rows.texts, pa.string())
        columns["vector"] = fixed_size_vectors(all_vectors)
        columns[TOKENS] = pa.array(all_tokens)
        columns[TRUNCATED] = pa.array(all_truncated)
        columns[SKIPPED] = pa.array(skipped)
        return pa.table(columns)

    def tokenize(self, texts: list[str]) -> list[TokenizedText]:
        """The texts with the prompt, tokenised and truncated as the server does."""
        return self.pipeline.tokenizer.encode([self.prompt + text for text in texts])

    def stream(
        self, windows: Iterable[tuple[K, list[TokenizedText]]]
    ) -> Iterator[tuple[K, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """(key, (vectors float32 [n, dim], tokens int32 [n], truncated bool [n])) for each
        (key, tokenised items), in order: each window in batches of `batch_size` sorted by
        token length (longest first: less padding), `workers` at once, its rows back in
        place; one window ahead: a window's batches are queued to the inference threads
        before the window before it is collected, so the threads never wait while the
        caller builds and writes its output, nor idle at the end of a window. When
        `windows` raises, the windows read before come out first, then the error."""
        queued: collections.deque = collections.deque()
        source = iter(windows)
        while True:
            try:
                key, items = next(source)
            except StopIteration:
                break
            except BaseException:
                while queued:  # keep what was read before the failure
                    yield self._finish(queued.popleft())
                raise
            queued.append((key, items, self._queue(items)))
            if len(queued) > 1:
                yield self._finish(queued.popleft())
        while queued:
            yield self._finish(queued.popleft())

    def _finish(self, entry):
        key, items, work = entry
        return key, self._collect(items, work)

    def _queue(self, items: list[TokenizedText]) -> list[tuple[list[int], Future]]:
        """Each batch's rows (length-sorted, longest first) and its queued inference."""
        size = self.options.batch_size
        order = sorted(range(len(items)), key=lambda i: -items[i].length)
        batches = [order[begin : begin + size] for begin in range(0, len(order), size)]
        return [(rows, self.pipeline.submit([items[i] for i in rows])) for rows in batches]

    def _collect(
        self, items: list[TokenizedText], work: list[tuple[list[int], Future]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vectors = np.zeros((len(items), self.dim), np.float32)
        for rows, future in work:
            raw = np.asarray(future.result())
            vectors[rows] = postprocess(raw, self.normalize, self.options.dimensions)
        tokens = np.fromiter((item.length for item in items), np.int32, len(items))
        truncated = np.fromiter(
            (item.full_length > item.length for item in items), bool, len(items)
        )
        return vectors, tokens, truncated

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors float32 [n, dim], tokens int32 [n], truncated bool [n]) for `texts` in
        their order, by sort windows (`window_sizes`: a short first one), the next
        window tokenised in a thread and queued to the inference threads (`stream`)."""
        parts = _parts(texts, window_sizes(self.options.batch_size))
        tokenized = prefetched(map(self.tokenize, parts))
        results = [embedded for _, embedded in self.stream((None, items) for items in tokenized)]
        if not results:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int32), np.zeros(0, bool)
        return tuple(np.concatenate(column) for column in zip(*results))  # type: ignore[return-value]

    def close(self) -> None:
        self.pipeline.close()


def _parts(texts: list[str], sizes: Iterator[int]) -> Iterator[list[str]]:
    start = 0
    while start < len(texts):
        size = next(sizes)
        yield texts[start : start + size]
        start += size


def fixed_size_vectors(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """float32 [n, dim] -> fixed_size_list<float32>[dim] without a copy per row."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def model_name(settings: Settings) -> str:
    """The name the server reports (EmbeddingEngine.model_name)."""
    if settings.served_model_name:
        return settings.served_model_name
    if settings.model is None:
        return BUNDLED_MODEL_NAME
    given = settings.model.rstrip("/")
    return given if not Path(given).is_dir() else Path(given).name
