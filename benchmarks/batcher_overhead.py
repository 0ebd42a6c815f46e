"""The batcher's own cost per one-text request: a Batcher over an embed function that returns
a fixed [n, 384] array at once (no model), one request after the other, so the figure is
the queue, the worker task, the inference-thread hand-over and the result hand-out.

    python -m benchmarks.batcher_overhead [--requests 1000] [--repeats 5]

Run it from two checkouts in alternation to compare two versions of the batcher.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from service.engine.batcher import Batcher, BatchLimits
from service.engine.tokenizer import TokenizedText


async def measure(requests: int, repeats: int) -> float:
    """Microseconds per sequential one-text request, the minimum over `repeats` runs."""
    batcher = Batcher(
        lambda texts: np.ones((len(texts), 384), np.float32), BatchLimits(16384, 256, 0.0, 100000)
    )
    batcher.start()
    text = [TokenizedText([1] * 12, [0] * 12, 12)]
    for _ in range(200):  # warm-up
        await batcher.submit(text).future
    figures = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(requests):
            await batcher.submit(text).future
        figures.append((time.perf_counter() - started) / requests * 1e6)
    await batcher.stop()
    return min(figures)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    figure = asyncio.run(measure(args.requests, args.repeats))
    print(f"{figure:.1f} us per one-text request (min of {args.repeats} x {args.requests})")


if __name__ == "__main__":
    main()
