"""Vector-store sinks: where the job's rows go besides the Parquet shards.

A sink is any object with the three methods of `Sink`. The job calls
`open(meta, dim, overwrite)` once, then `write(table)` once per shard, after the shard's
Parquet file is on disk and before the manifest marks it complete, then `close()`.

Resume contract: a run killed between `write` and the manifest update re-writes that shard
on the next run, so `write` must be an upsert keyed by `id` (a row written twice is stored
once). `open` must refuse (raise `SinkMismatchError`) a store that already holds vectors of
another model / options (`meta_conflict`), unless `overwrite` is true, in which case it
drops what is there and starts empty.

`meta` (JSON-serialisable; the same dict as the manifest's and the Parquet metadata's):
    {"model": str, "fingerprint": str, "variant": str, "dim": int,
     "options": {"prompt_name", "normalize", "dimensions", "chunk_tokens",
                 "chunk_overlap", "max_length", ...}}

The tables given to `write` have the columns of `service.bulk.schema.output_schema` (id,
doc_id, chunk_index, char_start, char_end, optional text, vector fixed_size_list<float32>).

`open_sink(spec)`: "lancedb:PATH" -> `LanceDBSink(PATH)`, "postgresql://..." (or
"postgres://...") -> `service.bulk.sinks.pgvector.PgvectorSink(dsn)`; both imported lazily.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa

# the meta keys two runs must agree on before their vectors may share a store
IDENTITY_KEYS = ("model", "fingerprint", "variant", "dim", "options")


class SinkError(RuntimeError):
    """A sink cannot be opened or written (the message names the store and why)."""


class SinkMismatchError(SinkError):
    """The store holds vectors of another model or other options."""


@runtime_checkable
class Sink(Protocol):
    def open(self, meta: dict, dim: int, overwrite: bool) -> None:
        """Create or reopen the store for vectors of `dim` floats; raises
        SinkMismatchError when it holds rows of other `meta` (unless `overwrite`)."""

    def write(self, table: pa.Table) -> None:
        """Upsert the rows of `table` (keyed by `id`)."""

    def close(self) -> None:
        """Finish (e.g. build the ANN index) and release connections."""


def meta_conflict(stored: dict, meta: dict) -> str | None:
    """None when `stored` and `meta` agree on IDENTITY_KEYS, else a message naming each
    differing key with both values."""
    return differences(stored, meta, IDENTITY_KEYS)


def differences(stored: dict, current: dict, keys=None, prefix: str = "") -> str | None:
    """None when `stored` and `current` agree on `keys` (default: every key of either),
    else "key: stored X, this run Y" for each differing key; nested dicts name the
    differing sub-keys (`options.chunk_tokens: ...`) instead of printing both whole."""
    names = keys if keys is not None else sorted(set(stored) | set(current))
    diffs = []
    for key in names:
        old, new = stored.get(key), current.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            diffs.append(differences(old, new, prefix=f"{prefix}{key}."))
        else:
            diffs.append(f"{prefix}{key}: stored {old!r}, this run {new!r}")
    return "; ".join(diffs) or None


def open_sink(spec: str) -> Sink:
    """The sink named by `spec` ("lancedb:PATH" or a postgresql:// DSN); ValueError for
    anything else."""
    if spec.startswith("lancedb:"):
        from service.bulk.sinks.lancedb import LanceDBSink

        path = spec[len("lancedb:") :]
        if not path:
            raise ValueError("--sink lancedb:PATH needs a PATH (a folder for the database)")
        return LanceDBSink(path)
    if spec.startswith(("postgresql://", "postgres://")):
        from service.bulk.sinks.pgvector import PgvectorSink

        return PgvectorSink(spec)
    raise ValueError(f"--sink {spec!r}: expected lancedb:PATH or a postgresql://user@host/db DSN")
