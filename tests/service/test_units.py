"""Pure units: pooling against sentence-transformers (host and device paths), execution
providers and device fallback, settings from the environment and flags, memory release."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sentence_transformers import models

from service.backends.providers import (
    CPU,
    CUDA,
    ProviderUnavailableError,
    effective_device,
    select_providers,
)
from service.config import Settings
from service.engine.pooling import pool


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize(
    "mode", ["mean", "cls", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"]
)
def test_pooling_matches_sentence_transformers(mode, library):
    """One pooling definition for the host (numpy) and the model's device (torch)."""
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(4, 7, 16)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6])
    reference = models.Pooling(16, pooling_mode=mode)
    expected = reference(
        {"token_embeddings": torch.from_numpy(tokens), "attention_mask": torch.from_numpy(mask)}
    )["sentence_embedding"]
    if library == "torch":
        tokens, mask = torch.from_numpy(tokens), torch.from_numpy(mask)
    ours = pool(tokens, mask, (mode.removesuffix("_tokens"),))
    assert type(ours) is type(tokens)  # stays in the library it was given (on its device)
    np.testing.assert_allclose(np.asarray(ours), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_torch_backend_pools_on_device_like_the_host_path(bundled_model):
    """TorchBackend.embed (pooling + Dense on the model's device) == forward() pooled on
    the host in numpy, for concatenated modes and a Tanh Dense layer."""
    from service.backends.base import Backend
    from service.backends.torch import TorchBackend
    from service.engine.model_spec import DenseLayer
    from service.engine.pooling import PoolingHead

    rng = np.random.default_rng(0)
    dense = DenseLayer(rng.normal(size=(8, 768)).astype(np.float32), np.ones(8, np.float32), "Tanh")
    head = PoolingHead(("mean", "max"), (dense,))
    backend = TorchBackend(str(bundled_model), "cpu")
    ids = np.array([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    on_device = backend.embed(ids, mask, np.zeros_like(ids), head)
    on_host = Backend.embed(backend, ids, mask, np.zeros_like(ids), head)
    assert on_device.shape == (2, 8) and on_device.dtype == np.float32
    np.testing.assert_allclose(on_device, on_host, rtol=1e-5, atol=1e-5)


def test_providers_auto_prefers_cuda_and_falls_back_to_cpu():
    assert select_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert select_providers("auto", [CPU]) == [CPU]
    assert select_providers("cpu", [CUDA, CPU]) == [CPU]
    assert select_providers("cuda", ["TensorrtExecutionProvider", CUDA, CPU]) == [CUDA, CPU]


def test_providers_cuda_without_cuda_build_is_a_clear_error():
    with pytest.raises(ProviderUnavailableError, match="gpu extra"):
        select_providers("cuda", [CPU])


def test_effective_device_detects_silent_cpu_fallback(caplog):
    with caplog.at_level(logging.WARNING):
        assert effective_device([CPU], [CUDA, CPU]) == "cpu"
    assert "serving on CPU" in caplog.text
    assert effective_device([CUDA, CPU], [CUDA, CPU]) == "cuda"


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("EMBED_MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("EMBED_BACKEND", "torch")
    monkeypatch.setenv("EMBED_API_KEY", "a, b")
    settings = Settings(_env_file=None)
    assert settings.max_batch_tokens == 4096 and settings.backend == "torch"
    assert settings.api_keys() == [b"a", b"b"]
    assert "a, b" not in repr(settings)  # keys never printed


def test_settings_from_cli_flags():
    from pydantic_settings import CliApp

    settings = CliApp.run(Settings, cli_args=["--max-wait-ms", "7", "--port", "9000"])
    assert settings.max_wait_ms == 7 and settings.port == 9000


def test_release_memory_turns_off_the_onnx_arena(onnx_file):
    from service.backends.onnx import OnnxBackend

    assert OnnxBackend(onnx_file, "cpu").session.get_session_options().enable_cpu_mem_arena
    lean = OnnxBackend(onnx_file, "cpu", memory_arena=False)
    assert not lean.session.get_session_options().enable_cpu_mem_arena


def test_release_heap_gives_freed_small_allocations_back():
    """On glibc, freed heap (many small objects) is returned: malloc_trim reports it."""
    import platform

    from service.engine.memory import release_heap

    if platform.libc_ver()[0] != "glibc":
        assert isinstance(release_heap(), bool)  # a no-op elsewhere, never an error
        return
    garbage = [bytearray(200) for _ in range(300_000)]  # ~70 MB of heap, not mmap
    del garbage
    assert release_heap() is True


def test_worker_plan_splits_the_cores_between_batches_at_once(monkeypatch):
    """Auto: two one-core batches at once for ONNX Runtime on a CPU with 2+ cores; one batch
    on the configured threads otherwise; an explicit count divides the cores."""
    from service.engine.workers import worker_plan

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    plan = lambda **kw: worker_plan(Settings(_env_file=None, **kw))  # noqa: E731
    assert plan() == (2, 1)
    assert plan(intra_op_threads=2) == (1, 2)  # threads set: one batch on them
    assert plan(backend="torch") == (1, 0)
    assert plan(inference_workers=1) == (1, 0)  # ONNX Runtime's default threads
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert plan() == (2, 8) and plan(inference_workers=4) == (4, 4)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert plan() == (1, 0)
