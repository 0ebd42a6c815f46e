"""The Ray engine's reader failures as one clear error (no cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

ray_exceptions = pytest.importorskip("ray.exceptions", reason="the [ray] extra is not installed")

from service.bulk.ray_engine import _reader_failure  # noqa: E402
from service.bulk.readers import InputError  # noqa: E402


def _task_error(function_name: str, cause: Exception) -> Exception:
    """As a Ray worker raises it: its process title names the task (`ray::NAME()`)."""
    error = ray_exceptions.RayTaskError(function_name, "Traceback ...", cause,
                                        proctitle=f"ray::{function_name}")  # fmt: skip
    return error.as_instanceof_cause()


def test_a_malformed_record_in_a_ray_reader_is_an_input_error_naming_the_way_to_find_it():
    config = SimpleNamespace(inputs=["/data/c.jsonl"])
    failure = _reader_failure(
        _task_error("ReadPandasJSON->SplitBlocks(4)", ValueError("Unexpected character at 19")),
        config,
    )
    assert isinstance(failure, InputError)
    message = str(failure)
    assert message.startswith("/data/c.jsonl: Ray's reader stopped at a malformed record")
    assert "ValueError: Unexpected character at 19" in message and "--engine local" in message


def test_other_failures_are_left_as_they_are():
    config = SimpleNamespace(inputs=["/data/c.jsonl"])
    actor = _task_error("EmbedActor.__call__", RuntimeError("no such model"))
    assert _reader_failure(actor, config) is actor
    plain = KeyError("x")
    assert _reader_failure(plain, config) is plain
