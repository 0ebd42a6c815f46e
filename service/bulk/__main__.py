"""`python -m service.bulk embed INPUT... --output DIR` and `python -m service.bulk search`.

The model flags (--model, --backend, --device, --onnx-file, --cache-dir) default to the
server's settings (EMBED_* variables), so the job serves the vectors the server would.
Exit status: 0 done, 1 the job failed (message on stderr), 2 bad flags or input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import orjson


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.bulk", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="embed a corpus into Parquet shards (+ a sink)")
    embed.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="JSONL / Parquet / CSV / TSV files or folders of .txt/.md files",
    )
    embed.add_argument("--output", required=True, type=Path, help="folder for shards + manifest")
    embed.add_argument("--text-field", default="text", help="the text column (default: text)")
    embed.add_argument(
        "--id-field",
        default=None,
        help="the id column (default: <file name>:<row> or the file path)",
    )
    embed.add_argument("--engine", choices=["local", "ray"], default="local")
    embed.add_argument(
        "--ray-address", default=None, help="join this Ray cluster (default: start a local one)"
    )
    embed.add_argument(
        "--sink", default=None, help="lancedb:PATH or postgresql://user:pass@host:port/db"
    )
    embed.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        help="split documents into chunks of at most N model tokens",
    )
    embed.add_argument("--chunk-overlap", type=int, default=0, help="tokens of overlap")
    embed.add_argument("--prompt-name", default=None, help="e.g. passage (the model's prompts)")
    embed.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalise (default: as the model says)",
    )
    embed.add_argument("--dimensions", type=int, default=None, help="keep the first D components")
    embed.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    embed.add_argument(
        "--inference-workers",
        type=int,
        default=0,
        help="batches computed at once, each on its share of the cores (0: auto, 2 on a "
        "CPU with 2+ cores)",
    )
    embed.add_argument(
        "--shard-rows",
        type=int,
        default=None,
        help="rows per Parquet shard, at least (default 10000)",
    )
    embed.add_argument("--include-text", action="store_true", help="store the chunk text")
    embed.add_argument("--strict", action="store_true", help="stop at the first bad record")
    embed.add_argument(
        "--overwrite", action="store_true", help="rebuild the output (and sink) instead of resuming"
    )
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_flags(embed)
    search = commands.add_parser("search", help="nearest chunks of a query")
    search.add_argument(
        "--index",
        required=True,
        help="an output folder of `embed`, lancedb:PATH (or a LanceDB folder), "
        "or a postgresql:// DSN (the pgvector sink's)",
    )
    search.add_argument("--query", required=True)
    search.add_argument("--k", type=int, default=10)
    search.add_argument(
        "--prompt-name", default=None, help="default: the model's 'query' prompt when it has one"
    )
    _model_flags(search)
    return parser  # fmt: skip


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="default: EMBED_MODEL or the bundled model")
    parser.add_argument("--backend", choices=["onnx", "torch"], default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument("--onnx-file", default=None, help="default: EMBED_ONNX_FILE or auto")
    parser.add_argument("--cache-dir", default=None)


def _overrides(args: argparse.Namespace) -> dict:
    from service.bulk.batch import settings_overrides

    return settings_overrides(model=args.model, backend=args.backend, device=args.device,
                              onnx_file=args.onnx_file, cache_dir=args.cache_dir)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from service.bulk.output import ManifestMismatchError, ResumeError
    from service.bulk.readers import InputError
    from service.bulk.sinks import SinkError

    try:
        if args.command == "embed":
            return _embed(args)
        return _search(args)
    except (InputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ManifestMismatchError, ResumeError, SinkError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _embed(args: argparse.Namespace) -> int:
    from service.bulk.batch import EmbedOptions
    from service.bulk.job import DEFAULT_SHARD_ROWS, JobConfig, format_summary, run_embed

    options = EmbedOptions(
        prompt_name=args.prompt_name, normalize=args.normalize, dimensions=args.dimensions,
        chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap,
        include_text=args.include_text, batch_size=args.batch_size,
        inference_workers=args.inference_workers,
    )  # fmt: skip
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1 (got {args.batch_size})")
    config = JobConfig(
        inputs=args.inputs, output=args.output, text_field=args.text_field,
        id_field=args.id_field, engine=args.engine, ray_address=args.ray_address,
        sink=args.sink, options=options, strict=args.strict, overwrite=args.overwrite,
        shard_rows=args.shard_rows or DEFAULT_SHARD_ROWS, settings=_overrides(args),
        progress=not args.no_progress,
    )  # fmt: skip
    summary = run_embed(config)
    print(format_summary(summary))  # the result on stdout; the bar and errors on stderr
    return 0


def _search(args: argparse.Namespace) -> int:
    from service.bulk.search import search

    hits = search(args.index, args.query, args.k, args.prompt_name, _overrides(args))
    for hit in hits:
        sys.stdout.buffer.write(orjson.dumps(hit) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
