"""Plot `benchmarks/results/compare.json`: throughput and p99 latency against concurrency
for 1-input short requests, one line per contender -> docs/benchmarks.png.

    python -m benchmarks.plot [--input benchmarks/results/compare.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, default=Path("benchmarks/results/compare.json"))
    p.add_argument("--output", type=Path, default=Path("docs/benchmarks.png"))
    args = p.parse_args(argv)
    rows = [r for r in json.loads(args.input.read_text())["rows"] if "error" not in r]
    series: dict[str, list[tuple[int, float, float]]] = {}
    for row in rows:
        if row.get("concurrency") and row["inputs_per_request"] == 1 and row["length"] == "short":
            series.setdefault(row["contender"], []).append(
                (row["concurrency"], row["sentences_per_s"], row["p99_ms"])
            )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in sorted(series.items()):
        points.sort()
        left.plot([c for c, _, _ in points], [s for _, s, _ in points], marker="o", label=name)
        right.plot([c for c, _, _ in points], [p for _, _, p in points], marker="o", label=name)
    for axis, label in ((left, "sentences/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients (1 short text per request)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2 on a 2-core CPU (client on the same cores)")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
