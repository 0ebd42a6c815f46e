"""Every Prometheus metric of the service, declared once, here (prefix `embed_`).

Each app gets its own registry, so several apps (tests) never clash. Under `--workers N`
prometheus-client's multiprocess mode aggregates every process (see `exposition`)."""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embed_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "embed_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "embed_queue_depth",
            "inputs waiting in the batching queue",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.batch_size = Histogram(
            "embed_batch_size", "inputs per inference batch", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "embed_batch_tokens",
            "padded tokens per inference batch",
            buckets=BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "embed_inference_duration_seconds",
            "time of one batch's inference",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.input_tokens = Counter(
            "embed_input_tokens", "tokens of all embedded inputs", registry=r
        )
        self.batch_failures = Counter(
            "embed_batch_failures", "inference batches that raised", registry=r
        )
        self.nonfinite_vectors = Counter(
            "embed_nonfinite_vectors",
            "vectors with a NaN or an infinity the model returned (never sent: the request "
            "got a 500 naming the input)",
            registry=r,
        )
        self.timeouts = Counter(
            "embed_request_timeouts",
            "requests dropped after waiting request_timeout_s without starting",
            registry=r,
        )
        self.rejected = Counter(
            "embed_rejected_inputs",
            "inputs refused with 429 (queue full, or wait over max_queue_wait_s)",
            registry=r,
        )
        self.turned_away = Counter(
            "embed_turned_away_inputs",
            "admitted inputs later refused with 429 before they started, when the measured "
            "drain rate dropped (also counted in embed_rejected_inputs)",
            registry=r,
        )
        self.throughput_estimate = Gauge(
            "embed_throughput_estimate_tokens_per_second",
            "the queue's drain rate used for admission: tokens completed per busy second "
            "(the smaller of a moving average and the last batches' rate)",
            multiprocess_mode="livemax",  # --workers N: the engine core's value, no pid label
            registry=r,
        )
        # Info metrics are per process (prometheus-client's multiprocess mode cannot share
        # them); each front end knows the served model, so each exposes it itself.
        self.info_registry = CollectorRegistry()
        self.model_info = Info("embed_model", "the served model", registry=self.info_registry)

    def exposition(self) -> bytes:
        """Prometheus text format. With `PROMETHEUS_MULTIPROC_DIR` set (`--workers N`), the
        values of every process of the server (front ends and engine core), aggregated."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
        else:
            registry = self.registry
        return generate_latest(registry) + generate_latest(self.info_registry)
