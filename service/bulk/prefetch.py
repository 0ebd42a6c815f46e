"""Run a producer one step ahead of its consumer, in a thread: how the job overlaps reading,
chunking and tokenising the next window with inference on the current one (ONNX Runtime and
the tokenizers library release the GIL while they compute). The shape of PyTorch's
DataLoader prefetch or Ray Data's streaming executor, for one producer and one consumer."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetched(iterable: Iterable[T], depth: int = 1) -> Iterator[T]:
    """The items of `iterable`, in order, each computed in a worker thread up to `depth`
    items before the consumer asks for it. The producer runs in one thread only (never two
    `next` calls at once). An exception raised by the producer is raised here, after the
    items before it; the producer is then finished. Closing this generator early leaves at
    most `depth` items computed and dropped."""
    if depth < 1:
        raise ValueError(f"depth {depth}: must be at least 1")
    items = iter(iterable)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    try:
        ahead = collections.deque(pool.submit(next, items, _END) for _ in range(depth))
        while True:
            item = ahead.popleft().result()
            if item is _END:
                return
            ahead.append(pool.submit(next, items, _END))
            yield item
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
