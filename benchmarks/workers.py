"""One process or several, against the code before the change and the naive server: one
run, same machine, same model file, same texts (issue 16's CPU check).

    python -m benchmarks.workers [--baseline-tree PATH] [--workers 1,2] [--duration 10]
                                 [--data ../shared/data] [--output benchmarks/results/workers.json]

Contenders: `baseline` (`python -m service` run from another checkout, e.g. a `git worktree`
of the commit before, when `--baseline-tree` is given), `workers-N` (this tree with
`--workers N`), `default` (this tree, no flag: what `--workers 0` resolves to here) and
`naive` (FastAPI + `SentenceTransformer.encode` per request). Every server of ours serves
the same fp32 `model.onnx`, so only the serving code differs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.compare import RESULTS, run_contender, save_report
from benchmarks.load import add_client_argument

GRID = [(1, 1, "short"), (64, 1, "short"), (32, 8, "short"), (8, 8, "passage")]
QUICK_GRID = [(1, 1, "short"), (8, 2, "short")]


def ours(port_flags: list[str], extra: list[str], tree: Path | None = None) -> list[str]:
    """`python -m service` on the fp32 file with admission limits out of the way (this
    measures throughput, not shedding); from `tree` when given (the code before)."""
    limits = ["--max-queued-inputs", "100000"]
    if tree is None:
        limits += ["--max-queue-wait-s", "50"]  # the code before has no such setting
    command = [sys.executable, "-m", "service", *port_flags, "--onnx-file", "model.onnx",
               *limits, "--log-level", "warning", *extra]  # fmt: skip
    if tree is None:
        return command
    return ["bash", "-c", f"cd {shlex.quote(str(tree))} && exec {shlex.join(command)}"]


def contenders(model: Path, workers: list[int], baseline: Path | None) -> dict[str, list[str]]:
    port = ["--host", "127.0.0.1", "--port", "{port}", "--model", str(model)]
    out: dict[str, list[str]] = {}
    if baseline is not None:
        out["baseline"] = ours(port, [], baseline)
    for n in workers:
        out[f"workers-{n}"] = ours(port, ["--workers", str(n)])
    out["default"] = ours(port, [])
    out["naive"] = [sys.executable, "-m", "benchmarks.baselines.naive_server",
                    "--model", str(model), "--port", "{port}"]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-tree", type=Path, help="checkout of the code to compare with")
    p.add_argument("--workers", default="1,2", help="comma-separated --workers values")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load point")
    p.add_argument("--quick", action="store_true", help="two small points (smoke test)")
    p.add_argument("--data", help="shared data folder for real sentences")
    p.add_argument("--model", type=Path, help="model folder with onnx/model.onnx")
    p.add_argument("--output", type=Path, default=RESULTS / "workers.json")
    add_client_argument(p, default="raw")
    args = p.parse_args(argv)
    from benchmarks.compare import prepare_model

    model = args.model or prepare_model(RESULTS / "models")
    grid = QUICK_GRID if args.quick else GRID
    rows: list[dict] = []
    chosen = contenders(model, [int(n) for n in args.workers.split(",")], args.baseline_tree)
    for name, command in chosen.items():
        rows += run_contender(name, command, "/embed", grid, args.duration, args.data, args.client)
    save_report(args.output, "benchmarks.workers", argv, rows, duration_per_point_s=args.duration)


if __name__ == "__main__":
    main()
