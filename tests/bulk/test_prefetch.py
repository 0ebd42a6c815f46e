"""`service.bulk.prefetch.prefetched`: order, errors after the items before them, a producer
that runs in another thread and ahead of its consumer."""

import threading

import pytest

from service.bulk.prefetch import prefetched


def test_items_come_in_order_and_all_of_them():
    assert list(prefetched(range(10), depth=3)) == list(range(10))
    assert list(prefetched([])) == []


def test_the_producer_runs_ahead_in_another_thread():
    produced: list[tuple[int, str]] = []
    consumer = threading.current_thread().name
    ahead = threading.Event()

    def produce():
        for i in range(3):
            produced.append((i, threading.current_thread().name))
            if i == 1:
                ahead.set()  # item 1 made while item 0 is still with the consumer
            yield i

    items = prefetched(produce())
    assert next(items) == 0
    assert ahead.wait(5), "the producer did not prepare the next item"
    assert list(items) == [1, 2]
    assert all(name != consumer for _, name in produced)


def test_a_producer_error_comes_after_the_items_before_it():
    def produce():
        yield "a"
        yield "b"
        raise ValueError("bad record at input.jsonl:3")

    got = []
    with pytest.raises(ValueError, match="input.jsonl:3"):
        for item in prefetched(produce(), depth=2):
            got.append(item)
    assert got == ["a", "b"]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth 0"):
        list(prefetched([1], depth=0))
