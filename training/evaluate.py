"""Evaluate a sentence-embedding model: STS (mono- and cross-lingual), Tatoeba
translation retrieval, and MSE to a teacher; cross-space figures with `--teacher`.

    python -m training.evaluate --model PATH --data ../shared/data \
        --languages de,es,fr,it [--teacher PATH] [--output eval.json]

Named parallel evaluation sets (`--parallel-dev docs=corpus/cpu-recipe`: the held-out
`dev/` split a `python -m training.corpus build` folder holds, or any folder or file of
English<TAB>translation TSV) add translation retrieval and MSE to the teacher on text of
another domain than stsb and Tatoeba (documentation, for instance).

This module is the command line and the results tables; the data readers are
`training.testsets`, the evaluation `training.scores`, the metrics `training.metrics`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.languages import parse_languages
from training.scores import EvaluationResult, evaluate_model
from training.testsets import DATA_ENV, load_parallel_dev, parse_parallel_dev, resolve_data_dir

DEFAULT_LANGUAGES = ["de", "es", "fr", "it"]


def metric_label(group: str, key: str) -> str:
    """A readable row label for one metric of an EvaluationResult group."""
    if group == "sts":
        return f"STS {key}"
    if group == "sts_cross_space":
        return f"STS teacher(en)-model({key.split('-')[-1]})"
    if group == "tatoeba":
        return f"Tatoeba {key}"
    if group == "tatoeba_cross_space":
        return f"Tatoeba model({key.split('->')[0]})->teacher(eng)"
    if group.startswith("parallel_"):
        name, _, rest = key.rpartition(":")
        if group == "parallel_retrieval":
            return f"{name} retrieval {rest}"
        if group == "parallel_retrieval_cross_space":
            return f"{name} retrieval model({rest.split('->')[0]})->teacher(eng)"
        return f"{name} MSE x100 {rest}"
    return f"MSE x100 {key}"


def markdown_table(results: dict[str, EvaluationResult]) -> str:
    """One column per evaluated model, one row per metric."""
    names = list(results)
    rows: dict[str, list[str]] = {}
    for col, res in enumerate(results.values()):
        for group, values in res.to_dict().items():
            for key, value in values.items():
                cell = f"{value:.3f}" if group.endswith("mse") else f"{value:.1f}"
                rows.setdefault(metric_label(group, key), [""] * len(names))[col] = cell
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a sentence-embedding model.")
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--data", help=f"data folder (default: ${DATA_ENV} or ../shared/data)")
    parser.add_argument("--languages", default=",".join(DEFAULT_LANGUAGES))
    parser.add_argument("--teacher", help="teacher model for cross-space figures and MSE")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--limit", type=int, help="only the first N rows of each set (quick look)")
    parser.add_argument(
        "--parallel-dev",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a named held-out parallel set: a corpus folder (its dev/ split), a folder of "
        "*-en-xx.tsv[.gz] files or one file; repeatable (e.g. docs=corpus/cpu-recipe)",
    )
    parser.add_argument(
        "--parallel-dev-only",
        action="store_true",
        help="evaluate only the --parallel-dev sets (no stsb, Tatoeba)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    languages = parse_languages(args.languages)
    if args.parallel_dev_only and not args.parallel_dev:
        parser.error("--parallel-dev-only needs at least one --parallel-dev")
    try:
        parallel_sets = dict(
            (name, load_parallel_dev(path, languages))
            for name, path in map(parse_parallel_dev, args.parallel_dev)
        )
    except ValueError as exc:  # DataError is a ValueError
        parser.error(str(exc))

    from sentence_transformers import SentenceTransformer

    data_dir = None if args.parallel_dev_only else resolve_data_dir(args.data)
    if data_dir is None and not args.parallel_dev_only:
        parser.error("no data folder: pass --data or set POLYGLOT_DATA")
    model = SentenceTransformer(args.model)
    teacher = SentenceTransformer(args.teacher) if args.teacher else None
    result = evaluate_model(
        model,
        data_dir,
        languages,
        teacher,
        batch_size=args.batch_size,
        limit=args.limit,
        parallel_sets=parallel_sets,
    )
    print(markdown_table({Path(args.model).name or args.model: result}))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
