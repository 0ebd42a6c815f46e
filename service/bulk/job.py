"""`embed`: the indexing job, with the local engine (one process, a plain loop) here and the
Ray engine in `service.bulk.ray_engine` (imported only for --engine ray).

Local loop: a reader thread reads documents (streaming), chunks and tokenises them into
sort windows (`window_sizes`: a short first one, then `batch_size * SORT_WINDOW_BATCHES`
chunks), one window ahead of the main
thread, which queues each window's batches to the inference threads one window ahead and
collects the one before (`BatchEmbedder.embed_windows`) -> a shard every `shard_rows`
chunks or more (ending on a document boundary) -> manifest. Resume skips
the input records the manifest's complete shards cover.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from filelock import FileLock
from tqdm import tqdm

from service.bulk.batch import (
    BatchEmbedder,
    ChunkRows,
    EmbedOptions,
    PreparedRows,
    window_sizes,
)
from service.bulk.output import ResumeState, ShardWriter, Totals
from service.bulk.prefetch import prefetched
from service.bulk.readers import ReadSpec, ReadStats, input_files, read_documents, total_bytes
from service.bulk.sinks import open_sink
from service.config import Settings

log = logging.getLogger(__name__)
DEFAULT_SHARD_ROWS = 10_000


class DuplicateIdError(ValueError):
    def __init__(self, doc_id: str, where: str) -> None:
        self.doc_id, self.where = doc_id, where
        super().__init__(
            f"{where}: duplicate id {doc_id!r} (an earlier record has the same id); ids must "
            "be unique: fix the input or leave --id-field out to number the records"
        )


@dataclass
class JobConfig:
    inputs: list[str]
    output: Path
    text_field: str = "text"
    id_field: str | None = None
    engine: str = "local"  # "local" or "ray"
    ray_address: str | None = None
    sink: str | None = None  # "lancedb:PATH" or a postgresql:// DSN
    options: EmbedOptions = field(default_factory=EmbedOptions)
    strict: bool = False
    overwrite: bool = False
    shard_rows: int = DEFAULT_SHARD_ROWS
    settings: dict = field(default_factory=dict)  # Settings overrides (model, onnx_file, ...)
    progress: bool = True

    def job_identity(self) -> dict:
        """What a resume must share with the run it continues (besides the model meta)."""
        return {
            "inputs": [str(Path(p).resolve()) for p in self.inputs],
            "text_field": self.text_field,
            "id_field": self.id_field,
        }

    def read_spec(self) -> ReadSpec:
        return ReadSpec(self.text_field, self.id_field, self.strict)


class IdRegistry:
    """Seen document ids, as 8-byte digests (about 70 bytes of memory per document: the one
    thing that grows with the corpus)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def add(self, doc_id: str, where: str) -> None:
        key = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
        if key in self._seen:
            raise DuplicateIdError(doc_id, where)
        self._seen.add(key)


def run_embed(config: JobConfig) -> dict:
    """Run the job; returns the summary (also in manifest.json). Raises InputError,
    DuplicateIdError (after writing every complete shard before it),
    ManifestMismatchError, SinkError, ValueError for bad options."""
    if config.engine == "ray":
        from service.bulk.ray_engine import run_ray

        return run_ray(config)
    if config.engine != "local":
        raise ValueError(f"--engine {config.engine!r}: expected local or ray")
    files = input_files(config.inputs)  # fail fast on a missing path
    warming = threading.Thread(target=warm_arrow, name="warm-arrow", daemon=True)
    warming.start()  # while the model loads
    embedder = BatchEmbedder(Settings(**config.settings), config.options)
    warming.join()
    Path(config.output).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(config.output) / ".lock")):
        sink = open_sink(config.sink) if config.sink else None
        writer = ShardWriter(
            config.output, embedder.meta(), config.job_identity(), embedder.schema, sink,
            config.overwrite,
        )  # fmt: skip
        state = writer.open()
        if writer.complete:
            embedder.close()
            return finished_run(config, writer, sink)
        started = time.perf_counter()
        stats = ReadStats()
        totals = _local_loop(config, embedder, writer, state, stats, total_bytes(files))
        summary = make_summary(config, totals, stats, time.perf_counter() - started, state)
        writer.finish(summary)
    embedder.close()
    return summary


def finished_run(config: JobConfig, writer: ShardWriter, sink) -> dict:
    """The summary of an output already complete (nothing embedded); with a --sink other
    than the one the run wrote to, its shards are loaded into that sink first."""
    log.info("%s: already complete; nothing to embed", config.output)
    summary = {**writer.manifest.get("summary", {}), "already_complete": True}
    if sink is not None:
        if summary.get("sink") != _redact(config.sink):
            summary["loaded_into_sink"] = writer.load_into_sink()
            summary["sink"] = _redact(config.sink)
        sink.close()
    return summary


def warm_arrow() -> None:
    """Pay pyarrow's one-time cost of its first conversion from Python objects (it imports
    pandas when installed: ~0.25 s on this project's 2-core VM) while the model loads instead
    of on the first shard."""
    pa.array(["warm"])


@dataclass
class Window:
    """Chunks of whole documents, tokenised, and the last input record they cover."""

    prepared: PreparedRows
    last_record: int
    progress: int  # input bytes read up to its last document (the bar moves when embedded)


def _windows(
    config: JobConfig, embedder: BatchEmbedder, state: ResumeState, stats: ReadStats
) -> Iterator[Window]:
    """Read -> chunk -> tokenise, a sort window (`window_sizes`) of chunks (whole
    documents) at a time; runs in the reader thread. On a failure (a
    duplicate id, bad input) the documents read before it come out as one more window,
    then the error."""
    sizes = window_sizes(config.options.batch_size, config.shard_rows)
    window = next(sizes)
    ids = IdRegistry()
    chunks, last_record, progress = ChunkRows(), state.records_done, 0
    try:
        for doc in read_documents(config.inputs, config.read_spec(), stats):
            ids.add(doc.doc_id, doc.where)
            progress = doc.progress
            if doc.record <= state.records_done:
                continue  # covered by a complete shard of an earlier run
            chunks.extend(embedder.chunk_documents([doc.doc_id], [doc.text]))
            last_record = doc.record
            if len(chunks) >= window:
                yield Window(embedder.prepare(chunks), last_record, progress)
                chunks, window = ChunkRows(), next(sizes)
    except Exception:
        if len(chunks):  # keep what is complete: the documents before the failure
            yield Window(embedder.prepare(chunks), last_record, progress)
        raise
    if len(chunks):
        yield Window(embedder.prepare(chunks), last_record, progress)


def _local_loop(
    config: JobConfig,
    embedder: BatchEmbedder,
    writer: ShardWriter,
    state: ResumeState,
    stats: ReadStats,
    size: int,
) -> Totals:
    """Embed the windows the reader thread prepares (`_windows`, one ahead: reading,
    chunking and tokenising overlap inference), write a shard every `shard_rows` chunks or
    more; returns the totals of all shards (earlier runs' included)."""
    totals = Totals()
    totals.add(state.totals)
    pending: list[pa.Table] = []
    pending_rows, last_record = 0, state.records_done
    bar = tqdm(total=size, unit="B", unit_scale=True, desc="embed", disable=not config.progress,
               file=sys.stderr, smoothing=0.1)  # fmt: skip
    started = time.perf_counter()
    done_now = 0

    def flush() -> None:
        nonlocal pending, pending_rows
        if pending:
            totals.add(writer.write_shard(pa.concat_tables(pending), last_record))
            pending, pending_rows = [], 0

    try:
        # the reader thread prepares the next window; its batches are queued to the
        # inference threads before this one is collected (`BatchEmbedder.stream`)
        windows = prefetched(_windows(config, embedder, state, stats))
        for window, table in embedder.embed_windows((w, w.prepared) for w in windows):
            pending.append(table)
            pending_rows += table.num_rows
            done_now += table.num_rows
            last_record = window.last_record
            bar.update(window.progress - bar.n)  # input embedded, not merely read
            rate = done_now / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(chunks=totals.chunks + pending_rows, chunks_per_s=f"{rate:.0f}")
            if pending_rows >= config.shard_rows:
                flush()
        flush()
    except BaseException:
        # keep what is complete: every window embedded before the failure forms one more shard
        if not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            try:
                flush()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                log.exception("could not write the last shard")
        raise
    finally:
        bar.update(size - bar.n)
        bar.close()
    return totals


def make_summary(
    config: JobConfig, totals: Totals, stats: ReadStats | None, wall_s: float, state: ResumeState
) -> dict:
    """The run's summary; chunks/s counts only the chunks embedded by this run."""
    embedded_now = totals.chunks - state.totals.chunks
    summary = {
        "documents": totals.documents,
        "chunks": totals.chunks,
        "tokens": totals.tokens,
        "truncated": totals.truncated,
        "skipped_empty": (stats.empty if stats else 0) + totals.empty,
        "skipped_malformed": stats.malformed if stats else 0,
        "wall_s": round(wall_s, 3),
        "chunks_per_s": round(embedded_now / wall_s, 1) if wall_s > 0 else None,
        "resumed_after_shards": state.shards,
        "output": str(Path(config.output).resolve()),
        "sink": _redact(config.sink),
    }
    if stats and stats.problems:
        summary["problems"] = stats.problems
    return summary


def _redact(sink: str | None) -> str | None:
    """A sink spec without a password."""
    if sink is None or "@" not in sink or "://" not in sink:
        return sink
    scheme, rest = sink.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


def format_summary(summary: dict) -> str:
    """The summary as the lines the CLI prints."""
    lines = (
        ["already complete: nothing embedded by this run; the summary of the run that "
         "wrote it follows (--overwrite rebuilds)"]
        if summary.get("already_complete")
        else []
    )  # fmt: skip
    if "loaded_into_sink" in summary:
        lines.append(f"loaded     {summary['loaded_into_sink']} rows of the finished output into "
                     f"the sink {summary['sink']}")  # fmt: skip
    if summary.get("resumed_after_shards") and not summary.get("already_complete"):
        lines.append(
            f"resumed    after {summary['resumed_after_shards']} complete shard(s) of an "
            "earlier run: the totals count them, chunks/s this run's chunks only"
        )
    lines += [
        f"documents  {summary['documents']}",
        f"chunks     {summary['chunks']}",
        f"tokens     {summary['tokens']}",
        f"truncated  {summary['truncated']}",
        f"skipped    {summary['skipped_empty']} empty, {summary['skipped_malformed']} malformed",
        f"wall time  {summary['wall_s']:.1f} s",
        f"chunks/s   {summary['chunks_per_s']}",
        f"output     {summary['output']}",
    ]
    if summary.get("sink"):
        lines.append(f"sink       {summary['sink']}")
    for problem in summary.get("problems", []):
        lines.append(f"skipped: {problem}")
    return "\n".join(lines)
