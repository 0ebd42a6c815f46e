"""PostgreSQL + pgvector sink: the job's rows in a table of a PostgreSQL server, searchable
with `search` (cosine distance, an HNSW index once the table is large enough).

DSN: a libpq URI, `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]`; besides
libpq's own parameters (`sslmode`, `host=/socket/dir`, ...) two of this sink's:

    table=NAME            the table (`schema.name` allowed); default `polyglot_chunks`
    index_min_rows=N      build the HNSW index at `close` once the table holds N rows
                          (default 10000; below that an exact scan is as fast)

Table (one row per chunk; `vector` is pgvector's `vector(dim)`):

    id text PRIMARY KEY, doc_id text, chunk_index int4, char_start int8, char_end int8,
    text text (NULL without --include-text), vector vector(dim)

The model's name, fingerprint, variant, dimension and options (the job's `meta`) are kept
in `polyglot_embed_indexes` (one row per table: name, meta jsonb, updated_at) and, for
people reading `\\dt+`, in the table's COMMENT. A run whose meta differs is refused
(`SinkMismatchError`) unless `overwrite`, which drops the table first.

Writes: each `write(table)` is one transaction: binary COPY into a temporary staging table,
then `INSERT ... ON CONFLICT (id) DO UPDATE`, so a shard written twice (a resumed job) is
stored once and a failure leaves the table as it was before that shard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pgvector.psycopg import register_vector
from psycopg import sql

from service.bulk.sinks import SinkError, SinkMismatchError, meta_conflict

log = logging.getLogger(__name__)

DEFAULT_TABLE = "polyglot_chunks"
DEFAULT_INDEX_MIN_ROWS = 10_000
META_TABLE = "polyglot_embed_indexes"
# pgvector's HNSW index takes `vector` columns of at most 2,000 dimensions
HNSW_MAX_DIM = 2000
COLUMNS = ("id", "doc_id", "chunk_index", "char_start", "char_end", "text", "vector")
COPY_TYPES = ("text", "text", "int4", "int8", "int8", "text", "vector")
SINK_PARAMS = ("table", "index_min_rows")
# pgvector's hnsw.ef_search bound: an HNSW scan returns at most this many rows
MAX_K = 1000


@dataclass(frozen=True)
class PgTarget:
    """A DSN split into what libpq connects to and this sink's own parameters."""

    conninfo: str  # the DSN without `table` / `index_min_rows`
    table: tuple[str, ...]  # ("name",) or ("schema", "name")
    index_min_rows: int

    @property
    def name(self) -> str:
        """The table's dotted name, the key of its row in META_TABLE."""
        return ".".join(self.table)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.table)


def parse_dsn(dsn: str, table: str | None = None, index_min_rows: int | None = None) -> PgTarget:
    """Split `dsn` (postgresql:// or postgres://) into a PgTarget; the arguments win over
    the DSN's `table=` / `index_min_rows=`. ValueError names a bad table name or count."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{redact(dsn)}: expected a postgresql:// DSN")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {key: value for key, value in query if key in SINK_PARAMS}
    libpq = [(key, value) for key, value in query if key not in SINK_PARAMS]
    conninfo = urlunsplit(parts._replace(query=urlencode(libpq)))
    name = table or own.get("table") or DEFAULT_TABLE
    pieces = tuple(name.split("."))
    if len(pieces) > 2 or not all(pieces):
        raise ValueError(f"table={name!r}: expected NAME or SCHEMA.NAME")
    raw = own.get("index_min_rows") if index_min_rows is None else index_min_rows
    try:
        min_rows = DEFAULT_INDEX_MIN_ROWS if raw is None else int(raw)
    except ValueError:
        raise ValueError(f"index_min_rows={raw!r}: expected a whole number >= 0") from None
    if min_rows < 0:
        raise ValueError(f"index_min_rows={min_rows}: expected a whole number >= 0")
    return PgTarget(conninfo, pieces, min_rows)


def with_params(dsn: str, **params: object) -> str:
    """`dsn` with `params` added to (or replacing those in) its query string, e.g.
    `with_params(dsn, table="chunks_v2")`."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({key: str(value) for key, value in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(dsn: str) -> str:
    """`dsn` with its password replaced by ***, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(target: PgTarget, dsn: str) -> psycopg.Connection:
    """An autocommit connection (statements that belong together run in
    `conn.transaction()`) with pgvector's types registered; SinkError (naming the server
    without the password) when the server cannot be reached or has no `vector` extension."""
    try:
        conn = psycopg.connect(target.conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise SinkError(f"cannot connect to {redact(dsn)}: {exc}".strip()) from exc
    try:
        ensure_extension(conn, dsn)
        register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_extension(conn: psycopg.Connection, dsn: str) -> None:
    """`CREATE EXTENSION IF NOT EXISTS vector`; SinkError when the server does not have
    pgvector installed or the user may not create it."""
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    if installed:
        return
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise SinkError(
            f"{redact(dsn)}: cannot enable the pgvector extension ({exc.diag.message_primary}); "
            "install pgvector on the server and run `CREATE EXTENSION vector` as a user "
            "allowed to"
        ) from exc


class PgvectorSink:
    """The job's sink into PostgreSQL + pgvector (see the module docstring for the DSN,
    the table and the resume/mismatch rules).

    `table` / `index_min_rows` override the DSN's parameters of the same name."""

    def __init__(
        self, dsn: str, table: str | None = None, index_min_rows: int | None = None
    ) -> None:
        self.dsn = dsn
        self.target = parse_dsn(dsn, table, index_min_rows)
        self.conn: psycopg.Connection | None = None
        self.dim = 0
        self.rows_written = 0

    def __repr__(self) -> str:
        return f"PgvectorSink({redact(self.dsn)!r}, table={self.target.name!r})"

    def open(self, meta: dict, dim: int, overwrite: bool) -> None:
        """Create (or reopen) the table for vectors of `dim` floats and record `meta`.

        Raises SinkMismatchError when the table holds rows of another model / options
        (unless `overwrite`: the table is dropped and made anew), SinkError when the server
        cannot be reached, lacks pgvector, or the table exists but was not made by this
        sink."""
        if dim < 1:
            raise ValueError(f"dim={dim}: expected a positive vector dimension")
        self.dim = dim
        self.conn = conn = connect(self.target, self.dsn)
        ident, name = self.target.ident, self.target.name
        try:
            with conn.transaction():
                # one job at a time prepares a given table
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, "
                        "meta jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                    ).format(sql.Identifier(META_TABLE))
                )
                stored = self._stored_meta()
                exists = table_exists(conn, self.target.table)
                if exists and stored is None and not overwrite:
                    raise SinkError(
                        f"table {name} exists in {redact(self.dsn)} but was not written by "
                        "polyglot-embed (no row in polyglot_embed_indexes); choose another "
                        "?table=NAME, or pass --overwrite to drop it"
                    )
                if exists and stored is not None and not overwrite:
                    conflict = meta_conflict(stored, {**meta, "dim": dim})
                    if conflict:
                        raise SinkMismatchError(
                            f"table {name} holds vectors of another model or options "
                            f"({conflict}); refusing to mix them: pass --overwrite to drop "
                            "the table and rebuild it, or write to another ?table=NAME"
                        )
                if overwrite:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
                self._create_table(dim)
                self._record_meta({**meta, "dim": dim})
        except BaseException:
            self.close_connection()
            raise
        log.info("pgvector sink: %s ready (dim %d)", self, dim)

    def _stored_meta(self) -> dict | None:
        row = self.conn.execute(
            sql.SQL("SELECT meta FROM {} WHERE name = %s").format(sql.Identifier(META_TABLE)),
            (self.target.name,),
        ).fetchone()
        return None if row is None else row[0]

    def _create_table(self, dim: int) -> None:
        self.conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, doc_id text NOT NULL, "
                "chunk_index int4 NOT NULL, char_start int8 NOT NULL, char_end int8 NOT NULL, "
                "text text, vector vector({}) NOT NULL)"
            ).format(self.target.ident, sql.Literal(dim))
        )

    def _record_meta(self, meta: dict) -> None:
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (name, meta) VALUES (%s, %s) ON CONFLICT (name) "
                "DO UPDATE SET meta = EXCLUDED.meta, updated_at = now()"
            ).format(sql.Identifier(META_TABLE)),
            (self.target.name, psycopg.types.json.Jsonb(meta)),
        )
        comment = (
            f"polyglot-embed vectors: model {meta.get('model')}, fingerprint "
            f"{meta.get('fingerprint')}, variant {meta.get('variant')}, dim {meta.get('dim')}"
        )
        self.conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(self.target.ident, sql.Literal(comment))
        )

    def write(self, table: pa.Table) -> None:
        """Upsert the rows of `table` (the columns of service.bulk.schema.output_schema;
        `text` optional) in one transaction. ValueError names a missing column or a vector
        of the wrong length; nothing of the table is stored then."""
        if self.conn is None:
            raise SinkError(f"{self}: write before open")
        if table.num_rows == 0:
            return
        columns = rows_of(table, self.dim)
        conn, ident = self.conn, self.target.ident
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS polyglot_stage "
                    "(LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                ).format(ident)
            )
            with conn.cursor().copy(
                sql.SQL("COPY polyglot_stage ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
                )
            ) as copy:
                copy.set_types(list(COPY_TYPES))
                for row in zip(*columns):
                    copy.write_row(row)
            names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
            updates = sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in COLUMNS[1:]
            )
            # DISTINCT ON: a table that repeats an id stores it once (the last copy wins
            # in no defined order; the job refuses duplicate ids before they get here)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {target} ({names}) SELECT DISTINCT ON (id) {names} "
                    "FROM polyglot_stage ON CONFLICT (id) DO UPDATE SET {updates}"
                ).format(target=ident, names=names, updates=updates)
            )
        self.rows_written += table.num_rows

    def close(self) -> None:
        """Build the HNSW index (cosine) when the table holds at least `index_min_rows`
        rows and has none yet, then close the connection."""
        if self.conn is None:
            return
        try:
            rows = self.count()
            if rows >= self.target.index_min_rows and self.dim <= HNSW_MAX_DIM:
                self.build_index()
            elif self.dim > HNSW_MAX_DIM:
                log.warning(
                    "pgvector sink: no HNSW index for %d dimensions (pgvector's limit is %d); "
                    "searches scan the table",
                    self.dim,
                    HNSW_MAX_DIM,
                )
        finally:
            self.close_connection()

    def count(self) -> int:
        """Rows in the table."""
        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(self.target.ident)
        ).fetchone()
        return int(row[0])

    def build_index(self) -> str:
        """`CREATE INDEX IF NOT EXISTS <table>_vector_hnsw ... USING hnsw (vector
        vector_cosine_ops)`; returns the index's name. Later upserts keep it current."""
        name = f"{self.target.table[-1]}_vector_hnsw"
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (vector vector_cosine_ops)"
                ).format(sql.Identifier(name), self.target.ident)
            )
        log.info("pgvector sink: HNSW index %s on %s", name, self.target.name)
        return name

    def close_connection(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def table_exists(conn: psycopg.Connection, table: tuple[str, ...]) -> bool:
    """Whether the (optionally schema-qualified) table exists for this connection."""
    name = ".".join(f'"{part}"' for part in table)
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def rows_of(table: pa.Table, dim: int) -> list[list[Any]]:
    """The COLUMNS of `table` as Python lists (vectors as float32 [dim] arrays, `text`
    None when absent), in COLUMNS order. ValueError names a missing column or a vector
    length other than `dim`."""
    missing = [c for c in COLUMNS if c != "text" and c not in table.column_names]
    if missing:
        raise ValueError(f"rows lack the column(s) {', '.join(missing)}")
    vectors = table.column("vector").combine_chunks()
    width = getattr(vectors.type, "list_size", None)
    if width is None:
        # a variable-size list column: every vector must still have `dim` floats
        lengths = set(pc.list_value_length(vectors).to_pylist())
        if lengths - {dim}:
            raise ValueError(f"vectors of {sorted(lengths)} floats; this table holds {dim}")
        width = dim
    if width != dim:
        raise ValueError(f"vectors of {width} floats; this table holds {dim}")
    flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    matrix = flat.reshape(-1, dim)
    text = (
        table.column("text").to_pylist()
        if "text" in table.column_names
        else [None] * table.num_rows
    )
    return [
        table.column("id").to_pylist(),
        table.column("doc_id").to_pylist(),
        table.column("chunk_index").to_pylist(),
        table.column("char_start").to_pylist(),
        table.column("char_end").to_pylist(),
        text,
        list(matrix),
    ]


def read_meta(dsn: str, table: str | None = None) -> dict:
    """The meta recorded for the DSN's table (model, fingerprint, variant, dim, options);
    SinkError when the table was not written by this sink."""
    target = parse_dsn(dsn, table)
    with connect(target, dsn) as conn:
        return stored_meta(conn, target, dsn)


def stored_meta(conn: psycopg.Connection, target: PgTarget, dsn: str) -> dict:
    """The META_TABLE row of `target`; SinkError when there is none or no table."""
    row = None
    if table_exists(conn, (META_TABLE,)) and table_exists(conn, target.table):
        row = conn.execute(
            sql.SQL("SELECT meta FROM {} WHERE name = %s").format(sql.Identifier(META_TABLE)),
            (target.name,),
        ).fetchone()
    if row is None:
        raise SinkError(f"{redact(dsn)}: no table {target.name} written by polyglot-embed")
    return row[0]


def search(dsn: str, query_vector: np.ndarray, k: int = 10, table: str | None = None) -> list[dict]:
    """The `k` rows nearest to `query_vector` (float32 [dim]) by cosine distance, nearest
    first: dicts with id, doc_id, chunk_index, char_start, char_end, text (None when not
    stored) and score (cosine similarity, 1 - pgvector's `<=>` distance).

    Uses the HNSW index when there is one, else an exact scan. ValueError for k outside
    1..MAX_K or a vector of the wrong length; SinkError for a table this sink did not
    write."""
    return search_many(dsn, np.asarray(query_vector, dtype=np.float32)[None, :], k, table)[0]


def search_many(
    dsn: str, query_vectors: np.ndarray, k: int = 10, table: str | None = None
) -> list[list[dict]]:
    """`search` for each row of `query_vectors` (float32 [queries, dim]) over one
    connection: one list of hits per query."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k}: expected 1..{MAX_K}")
    queries = np.asarray(query_vectors, dtype=np.float32)
    target = parse_dsn(dsn, table)
    with connect(target, dsn) as conn:
        dim = stored_meta(conn, target, dsn)["dim"]
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(
                f"query vectors of shape {list(queries.shape)}; table {target.name} holds "
                f"vectors of {dim} floats"
            )
        # HNSW returns at most ef_search rows: let it return k
        conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(max(40, k))))
        statement = sql.SQL(
            "SELECT id, doc_id, chunk_index, char_start, char_end, text, "
            "vector <=> %s AS distance FROM {} ORDER BY vector <=> %s LIMIT %s"
        ).format(target.ident)
        results = []
        with conn.cursor() as cur:
            for query in queries:
                rows = cur.execute(statement, (query, query, k), prepare=True).fetchall()
                results.append([hit(row) for row in rows])
    return results


def hit(row: tuple) -> dict:
    """One search result row as a dict (score: cosine similarity)."""
    keys = ("id", "doc_id", "chunk_index", "char_start", "char_end", "text")
    return {**dict(zip(keys, row[:6])), "score": 1.0 - float(row[6])}
