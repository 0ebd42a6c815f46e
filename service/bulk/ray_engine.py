"""`--engine ray`: the same job on Ray Data, beyond one machine (`pip install ".[ray]"`).

    Ray readers (read_parquet / read_json / read_csv / read_binary_files)
      -> map_batches(EmbedActor): an actor pool, each actor builds the served pipeline
         once and runs the local engine's batch function (`BatchEmbedder.embed_documents`)
      -> the driver streams the rows, in input order, into the same Parquet shards,
         manifest and sink as the local engine (`ShardWriter`)

Without `--ray-address` a local Ray cluster starts in this process; with it the job joins
that cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the
others; every node needs this package installed). Actor pool: one actor per GPU with
`num_gpus=1` on GPU clusters; on CPU clusters up to (cluster CPUs - 1) / cpus_per_actor
actors (one CPU left to the readers), each running ONNX Runtime on CPUs / actors cores
(`inference_workers` batches at once, auto 2, as the local engine).

Differences from the local engine (docs/indexing.md): --id-field is required for JSONL /
Parquet / CSV input (Ray's readers do not number rows), a malformed record stops the run
(Ray's readers are strict), and an interrupted run is redone rather than resumed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
from filelock import FileLock
from tqdm import tqdm

from service.bulk.batch import SORT_WINDOW_BATCHES, BatchEmbedder, EmbedOptions
from service.bulk.output import ResumeError, ShardWriter, Totals
from service.bulk.readers import CSV_DELIMITERS, InputError, _kind, input_files
from service.bulk.sinks import open_sink
from service.config import Settings
from service.engine.workers import worker_plan

log = logging.getLogger(__name__)
DOC_ID, TEXT = "doc_id", "text"  # the columns the reading stage hands to the actors
NODE = "_node"  # internal: the node that embedded a row (counted in the summary)
RAY_BATCH_WINDOWS = 1  # sort windows (`SORT_WINDOW_BATCHES` batches) per Ray batch


class EmbedActor:
    """A Ray Data callable class: builds the served pipeline once per actor and maps
    batches of documents (columns doc_id, text) to output rows."""

    def __init__(self, settings: dict, options: EmbedOptions) -> None:
        import ray

        self.embedder = BatchEmbedder(Settings(**settings), options)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = [str(value) for value in batch.column(DOC_ID).to_pylist()]
        texts = [value or "" for value in batch.column(TEXT).to_pylist()]
        table = self.embedder.embed_documents(ids, texts)
        return table.append_column(NODE, pa.array([self.node] * table.num_rows))


def _to_documents(batch: pa.Table, text_field: str, id_field: str) -> pa.Table:
    """A batch of input rows -> the columns doc_id (string) and text (string)."""
    missing = [name for name in (text_field, id_field) if name not in batch.column_names]
    if missing:
        raise InputError(f"no column {missing[0]!r} in the input; columns: {batch.column_names}")
    ids = [None if v is None else str(v) for v in batch.column(id_field).to_pylist()]
    text_type = batch.schema.field(text_field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)
            or pa.types.is_null(text_type)):  # fmt: skip
        raise InputError(
            f"the text column {text_field!r} holds {text_type}, not strings (--text-field)"
        )
    texts = batch.column(text_field).to_pylist()
    return pa.table({DOC_ID: pa.array(ids, pa.string()), TEXT: pa.array(texts, pa.string())})


def _text_files_to_documents(batch: pa.Table, root: str) -> pa.Table:
    """read_binary_files rows (bytes, path) -> doc_id (path relative to `root`), text."""
    ids, texts = [], []
    for raw, path in zip(batch.column("bytes").to_pylist(), batch.column("path").to_pylist()):
        ids.append(Path(path).relative_to(root).as_posix())
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            raise InputError(f"{path}:{line}: byte offset {error.start}: not UTF-8") from None
    return pa.table({DOC_ID: pa.array(ids, pa.string()), TEXT: pa.array(texts, pa.string())})


def read_dataset(config):
    """The input as a Ray Dataset of (doc_id, text), in input order."""
    import ray

    files = input_files(config.inputs)
    datasets = []
    for given in config.inputs:
        path = Path(given)
        if path.is_dir():
            paths = [str(p.resolve()) for p, folder in files if folder == path]
            ds = ray.data.read_binary_files(paths, include_paths=True)
            root = str(path.resolve())
            datasets.append(ds.map_batches(_text_files_to_documents, fn_kwargs={"root": root},
                                           batch_format="pyarrow"))  # fmt: skip
            continue
        if config.id_field is None:
            raise InputError(
                f"{path}: --engine ray needs --id-field for JSONL / Parquet / CSV input (Ray's "
                "readers do not number rows); the local engine numbers them"
            )
        kind, resolved = _kind(path), str(path.resolve())
        if kind == "parquet":
            ds = ray.data.read_parquet(resolved, columns=[config.text_field, config.id_field])
        elif kind == "jsonl":
            ds = ray.data.read_json(resolved, lines=True)
        else:
            import pyarrow.csv as pcsv

            delimiter = CSV_DELIMITERS[path.suffix.lower()]
            ds = ray.data.read_csv(
                resolved,
                parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    column_types={config.text_field: pa.string(), config.id_field: pa.string()}
                ),
            )
        fields = {"text_field": config.text_field, "id_field": config.id_field}
        datasets.append(ds.map_batches(_to_documents, fn_kwargs=fields, batch_format="pyarrow"))
    dataset = datasets[0]
    return dataset.union(*datasets[1:]) if len(datasets) > 1 else dataset


def actor_pool(cpus_per_actor: int = 1) -> tuple[dict, int]:
    """(map_batches arguments, ONNX Runtime threads per actor) sizing the actor pool to the
    cluster: one actor per GPU, else up to (CPUs - 1) / cpus_per_actor actors (one CPU left
    to the readers), each running ONNX Runtime on its share of the cluster's cores
    (CPUs / actors, at least cpus_per_actor: on a 2-core machine one actor on 2 threads)."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"compute": ray.data.ActorPoolStrategy(size=gpus), "num_gpus": 1}, 0
    cpus = int(resources.get("CPU", 1))
    actors = max(1, (cpus - 1) // cpus_per_actor)
    threads = max(cpus_per_actor, cpus // actors)
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=actors)  # `concurrency` before 2.51
    return {"compute": pool, "num_cpus": cpus_per_actor}, threads


def run_ray(config, cpus_per_actor: int = 1) -> dict:
    """The job on Ray (see the module docstring); returns the summary. Joins the cluster
    at config.ray_address, else starts a local one (stopped at the end); when Ray is
    already initialised in this process, runs there."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = not ray.is_initialized()
    if started_here:
        if config.ray_address:
            ray.init(address=config.ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    try:
        return _run_on_cluster(config, cpus_per_actor)
    finally:
        if started_here:
            ray.shutdown()  # disconnect; a local cluster started here stops


def _run_on_cluster(config, cpus_per_actor: int) -> dict:
    import ray

    from service.bulk.job import finished_run, make_summary
    from service.bulk.output import ResumeState

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order
    context.enable_progress_bars = False
    pool, threads = actor_pool(cpus_per_actor)
    settings, options = dict(config.settings), config.options
    if "num_gpus" in pool:
        settings["device"] = "cuda"
    elif "intra_op_threads" not in settings:
        # the actor's cores split by the local engine's rule (`worker_plan`): batches at
        # once, each on its share of the cores; one batch on all of them otherwise
        plan = Settings(**{**settings, "inference_workers": options.inference_workers})
        workers, per_worker = worker_plan(plan, cores=threads)
        settings["intra_op_threads"] = per_worker or threads
        options = replace(options, inference_workers=workers)
    driver = BatchEmbedder(Settings(**settings), config.options)  # meta + schema, and checks
    meta, schema = driver.meta(), driver.schema
    driver.close()
    dataset = read_dataset(config).map_batches(
        EmbedActor,
        fn_constructor_kwargs={"settings": settings, "options": options},
        # one sort window (2,048 rows at the default batch size) per Ray batch: Ray's
        # streaming executor reads the next batch while the actor embeds this one
        batch_size=config.options.batch_size * SORT_WINDOW_BATCHES * RAY_BATCH_WINDOWS,
        batch_format="pyarrow",
        **pool,
    )
    Path(config.output).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(config.output) / ".lock")):
        sink = open_sink(config.sink) if config.sink else None
        writer = ShardWriter(config.output, meta, config.job_identity(), schema, sink,
                             config.overwrite)  # fmt: skip
        state = writer.open()
        if writer.complete:
            return finished_run(config, writer, sink)
        if state.shards:
            raise ResumeError(
                f"{config.output}: a run stopped after {state.shards} shards; --engine ray "
                "does not resume: rerun with --overwrite, or finish it with --engine local"
            )
        started = time.perf_counter()
        try:
            totals, nodes = _drain(dataset, writer, config)
        except Exception as error:  # noqa: BLE001 - a reader's failure becomes a clear one
            raise _reader_failure(error, config) from None
        summary = make_summary(config, totals, None, time.perf_counter() - started, ResumeState())
        summary["engine"], summary["nodes"] = "ray", len(nodes)
        writer.finish(summary)
    return summary


def _reader_failure(error: Exception, config) -> Exception:
    """A Ray reader's task failed (a malformed record: Ray's readers are strict and do not
    say which line): an InputError naming the inputs, Ray's reason and the way to find the
    record; any other failure unchanged."""
    import ray.exceptions

    if not isinstance(error, ray.exceptions.RayTaskError):
        return error
    # the failed task, e.g. "ray::ReadPandasJSON->SplitBlocks(4)()": the message's first line
    task = getattr(error, "function_name", None) or (str(error).splitlines() or [""])[0]
    if not re.search(r"(^|::)Read\w", task):
        return error
    cause = getattr(error, "cause", None)
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error).strip()
    reason = reason.splitlines()[0] if reason else "unknown"
    inputs = ", ".join(str(p) for p in config.inputs)
    return InputError(
        f"{inputs}: Ray's reader stopped at a malformed record ({reason}); --engine ray stops "
        "at the first one without naming its line: --engine local reports each as file:line "
        "and skips it (--strict stops)"
    )


def _drain(dataset, writer: ShardWriter, config) -> tuple[Totals, set[str]]:
    """Stream the rows, in input order, into shards of `shard_rows` rows or more, each
    ending where a document ends."""
    totals, nodes = Totals(), set()
    pending: list[pa.Table] = []
    pending_rows = 0
    bar = tqdm(unit="chunk", desc="embed (ray)", disable=not config.progress, file=sys.stderr)

    def flush(upto: int | None = None) -> None:
        nonlocal pending, pending_rows
        table = pa.concat_tables(pending)
        head = table if upto is None else table.slice(0, upto)
        totals.add(writer.write_shard(head))
        rest = table.slice(upto) if upto is not None else table.slice(table.num_rows)
        pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        nodes.update(batch.column(NODE).unique().to_pylist())
        batch = batch.drop_columns([NODE])
        pending.append(batch)
        pending_rows += batch.num_rows
        bar.update(batch.num_rows)
        while pending_rows >= config.shard_rows:
            cut = _document_boundary(pa.concat_tables(pending), config.shard_rows)
            if cut is None:
                break  # the document at the cut goes on in the next batch
            flush(cut)
    if pending_rows:
        flush()
    bar.close()
    return totals, nodes


def _document_boundary(table: pa.Table, at_least: int) -> int | None:
    """The first row index >= at_least (counting rows that are not skipped) where a new
    document starts, or None when the table ends first."""
    from service.bulk.batch import SKIPPED

    docs = table.column("doc_id").to_pylist()
    skipped = table.column(SKIPPED).to_pylist()
    kept = 0
    for index, (doc, skip) in enumerate(zip(docs, skipped)):
        if kept >= at_least and index and doc != docs[index - 1]:
            return index
        kept += not skip
    return None
