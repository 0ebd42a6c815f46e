"""`--sink lancedb:PATH`: an embedded LanceDB table (no server), table `chunks` in the
database folder PATH.

Rows are upserted by `id` (`merge_insert`), so a shard written again after a crash is
stored once. The job's meta (model, fingerprint, variant, options) is kept in the table's
schema metadata; a table of other meta is refused unless `overwrite`. At `close()` an
IVF-PQ ANN index (cosine) is built once the table has ANN_INDEX_MIN_ROWS rows or more;
below that a flat (exact) scan is fast enough and an index would be poorly trained.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa

from service.bulk.sinks import SinkError, SinkMismatchError, meta_conflict

log = logging.getLogger(__name__)
TABLE = "chunks"
META_KEY = b"polyglot_embed"
ANN_INDEX_MIN_ROWS = 50_000
METRIC = "cosine"


class LanceDBSink:
    """An embedded LanceDB table at `path` (a folder; created when missing)."""

    def __init__(self, path: str | Path, index_min_rows: int = ANN_INDEX_MIN_ROWS) -> None:
        self.path, self.index_min_rows = Path(path), index_min_rows
        self.table = None
        self.indexed = False

    def open(self, meta: dict, dim: int, overwrite: bool) -> None:
        # Lance's Rust log says WARN for a table it creates ("No existing dataset ..."):
        # errors only, unless the user set LANCEDB_LOG (read when lancedb is imported)
        os.environ.setdefault("LANCEDB_LOG", "error")
        import lancedb

        self.db = lancedb.connect(str(self.path))
        if TABLE in self.db.list_tables().tables and not overwrite:
            table = self.db.open_table(TABLE)
            stored = stored_meta(table)
            problem = meta_conflict(stored, meta) if stored is not None else "no meta recorded"
            if problem:
                raise SinkMismatchError(
                    f"lancedb:{self.path} table {TABLE!r} holds vectors of another run "
                    f"({problem}); refusing to mix them: use --overwrite or another path"
                )
            self.table = table
            return
        from service.bulk.schema import output_schema

        schema = output_schema(dim, meta["options"].get("include_text", False),
                               {META_KEY: json.dumps(meta).encode()})  # fmt: skip
        self.table = self.db.create_table(TABLE, schema=schema, mode="overwrite")

    def write(self, table: pa.Table) -> None:
        if self.table is None:
            raise SinkError("LanceDBSink.write before open")
        table = table.replace_schema_metadata(None).cast(self.table.schema)
        (
            self.table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )

    def close(self) -> None:
        """Build the ANN index when the table is large enough (once per run)."""
        if self.table is None or self.indexed:
            return
        rows = self.table.count_rows()
        if rows >= self.index_min_rows:
            log.info("lancedb:%s: building an IVF-PQ index over %d rows", self.path, rows)
            self.table.create_index(metric=METRIC, vector_column_name="vector", replace=True)
        self.indexed = True


def stored_meta(table) -> dict | None:
    """The job meta recorded in a LanceDB table's schema (None: none)."""
    raw = (table.schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else None


def has_index(table) -> bool:
    return any("vector" in index.columns for index in table.list_indices())
