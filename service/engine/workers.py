"""How many batches run at once and on how many threads each: the one rule the server's
batcher, `ModelPipeline.encode`, the bulk job and the Ray actors share.

On a small CPU one batch on every core loses to several batches on a share of the cores
each: a batch's ONNX Runtime threads wait for each other at every operator, and on a busy
host (HTTP, JSON and tokenising share the cores) one descheduled thread stalls them all.
Measured on the 2-core VM (`python -m benchmarks.bulk_speed`, docs/benchmarks.md): two
batches at once on one thread each embedded 437.6 short texts/s where one batch on two
threads embedded 379.9. ONNX Runtime sessions take concurrent `run` calls, so the
workers share one copy of the model."""

from __future__ import annotations

import os

from service.config import Settings


def core_split(workers: int, cores: int) -> tuple[int, int]:
    """(inference workers, threads per worker) sharing `cores` cores: `workers` (0: auto,
    two where there are two cores or more), the cores divided among them, at least one
    thread each. The server and the local job split the machine's cores, a Ray actor its
    share of the node's."""
    workers = workers or min(2, cores)
    return workers, max(1, cores // workers)


def worker_plan(settings: Settings, cores: int | None = None) -> tuple[int, int]:
    """(inference workers, intra-op threads per worker; 0 = the backend's default) for
    `settings` on `cores` cores (default: the machine's; a Ray actor passes its share).
    `inference_workers` 0 (auto): 2 for ONNX Runtime on a CPU with 2 cores or more when
    `intra_op_threads` is not set, each on half the cores; else 1 on the configured
    threads. An explicit `inference_workers` N > 1 without `intra_op_threads` divides the
    cores among the N."""
    workers, threads = settings.inference_workers, settings.intra_op_threads
    if not workers and (settings.backend != "onnx" or threads or not _on_cpu(settings.device)):
        return 1, threads
    if threads:
        return workers, threads
    workers, per_worker = core_split(workers, cores or os.cpu_count() or 1)
    return (workers, per_worker) if workers > 1 else (1, 0)


def _on_cpu(device: str) -> bool:
    from service.backends.providers import select_providers

    return select_providers(device)[0] == "CPUExecutionProvider"
