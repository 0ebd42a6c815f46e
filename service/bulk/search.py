"""`search(index, query, k)`: the k chunks nearest to a query, by cosine similarity.

`index` is an output folder of `embed` (its Parquet shards are scanned shard by shard,
keeping the top k: memory is one shard), a LanceDB database (`lancedb:PATH`, or a folder
holding a `chunks.lance` table; its ANN index is used when one was built), or a pgvector
table (a postgresql:// DSN, as given to `--sink`; `service.bulk.sinks.pgvector.search`).
The query is embedded with the served pipeline and the options the index was built with (normalize,
dimensions); a model whose fingerprint differs from the index's is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from service.bulk.batch import BatchEmbedder, EmbedOptions
from service.bulk.output import read_manifest
from service.config import Settings
from service.engine.pooling import l2_normalize

QUERY_PROMPT = "query"


class IndexMismatchError(ValueError):
    """The index was built by another model than the one that would embed the query."""


def _lancedb_path(index: str) -> Path | None:
    if index.startswith("lancedb:"):
        return Path(index[len("lancedb:") :])
    path = Path(index)
    return path if (path / "chunks.lance").is_dir() else None


def search(
    index: str | Path,
    query: str,
    k: int = 10,
    prompt_name: str | None = None,
    settings: dict | None = None,
    embedder: BatchEmbedder | None = None,
) -> list[dict]:
    """Up to `k` hits, best first: {"id", "score" (cosine similarity), "text" (None when
    the index has no text), "doc_id", "chunk_index"}. `prompt_name` None: the model's
    "query" prompt when it has one. Raises FileNotFoundError (no index at `index`),
    IndexMismatchError, ValueError (k < 1)."""
    if k < 1:
        raise ValueError(f"--k must be at least 1 (got {k})")
    index = str(index)
    if index.startswith(("postgresql://", "postgres://")):
        from service.bulk.sinks.pgvector import read_meta
        from service.bulk.sinks.pgvector import search as pg_search

        vector = _query_vector(read_meta(index), query, prompt_name, settings, embedder)
        return pg_search(index, vector, k)
    lance_path = _lancedb_path(index)
    if lance_path is not None:
        import lancedb

        from service.bulk.sinks.lancedb import TABLE, stored_meta

        if not (lance_path / f"{TABLE}.lance").is_dir():
            raise FileNotFoundError(f"{lance_path}: no LanceDB table {TABLE!r}")
        table = lancedb.connect(str(lance_path)).open_table(TABLE)
        meta = stored_meta(table) or {}
        vector = _query_vector(meta, query, prompt_name, settings, embedder)
        return _lancedb_hits(table, vector, k)
    manifest = read_manifest(Path(index))
    if manifest is None:
        raise FileNotFoundError(
            f"{index}: neither an output folder of `embed` (no manifest.json) nor a LanceDB "
            "database (lancedb:PATH)"
        )
    vector = _query_vector(manifest["meta"], query, prompt_name, settings, embedder)
    files = [Path(index) / entry["file"] for entry in manifest["shards"]]
    return _parquet_hits(files, vector, k)


def _query_vector(
    meta: dict, query: str, prompt_name: str | None, settings: dict | None, embedder
) -> np.ndarray:
    """The query's unit vector [dim], embedded as the index's rows were."""
    options = meta.get("options", {})
    if embedder is None:
        base = Settings(**(settings or {}))
        spec_prompts = _model_prompts(base)
        name = prompt_name or (QUERY_PROMPT if QUERY_PROMPT in spec_prompts else None)
        embedder = BatchEmbedder(
            base,
            EmbedOptions(prompt_name=name, normalize=options.get("normalize"),
                         dimensions=options.get("dimensions")),
        )  # fmt: skip
    fingerprint = embedder.meta()["fingerprint"]
    if meta.get("fingerprint") and meta["fingerprint"] != fingerprint:
        raise IndexMismatchError(
            f"the index was built by {meta.get('model')} ({meta.get('variant')}, fingerprint "
            f"{meta['fingerprint'][:16]}), the query would be embedded by fingerprint "
            f"{fingerprint[:16]}: pass the index's --model / --onnx-file"
        )
    vector = embedder.embed_texts([query])[0][0]
    return l2_normalize(vector[None, :])[0]


def _model_prompts(settings: Settings) -> dict:
    from service.engine.model_spec import load_model_spec, resolve_model_path

    return load_model_spec(resolve_model_path(settings.model_path())).prompts


def _parquet_hits(files: list[Path], query: np.ndarray, k: int) -> list[dict]:
    best: list[tuple[float, dict]] = []
    for file in files:
        table = pq.read_table(file)
        if not table.num_rows:
            continue
        dim = table.schema.field("vector").type.list_size
        flat = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
        vectors = flat.reshape(-1, dim)
        scores = l2_normalize(vectors) @ query
        top = np.argsort(-scores, kind="stable")[:k]
        has_text = "text" in table.column_names
        for row in top:
            best.append((float(scores[row]), _hit(table, int(row), float(scores[row]), has_text)))
        best = sorted(best, key=lambda item: -item[0])[:k]
    return [hit for _, hit in best]


def _hit(table, row: int, score: float, has_text: bool) -> dict:
    return {
        "id": table.column("id")[row].as_py(),
        "score": score,
        "text": table.column("text")[row].as_py() if has_text else None,
        "doc_id": table.column("doc_id")[row].as_py(),
        "chunk_index": table.column("chunk_index")[row].as_py(),
    }


def _lancedb_hits(table, query: np.ndarray, k: int) -> list[dict]:
    result = table.search(query).distance_type("cosine").limit(k).to_arrow()
    has_text = "text" in result.column_names
    hits = []
    for row in range(result.num_rows):
        score = 1.0 - float(result.column("_distance")[row].as_py())
        hits.append(_hit(result, row, score, has_text))
    return hits
