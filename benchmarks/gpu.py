"""GPU serving benchmark that needs no weight download: the served model's architecture and
tokenizer with random weights (throughput is real, vector quality is not), driven at the
load points of issue 16, each row next to the in-process ceiling.

    python -m benchmarks.gpu --random-weights [--model PATH] [--backend torch] [--device auto]
                             [--duration 15] [--quick] [--output benchmarks/results/gpu.json]

For every load point (clients x inputs per request x text length) it reports the service's
sentences/s and latency (`benchmarks.load`, raw keep-alive client), the mean batch size the
batcher formed (from `/metrics`), GPU utilisation sampled with pynvml when present (else
"not measured"), and the ceiling: the same served pipeline (tokenised texts -> backend ->
pooling) called in-process at the batch size the batcher formed, no HTTP. On a CPU host it
runs too (use `--quick`): the same code path, smaller numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.compare import (
    batch_histogram,
    free_port,
    histogram_delta,
    save_report,
    wait_healthy,
)
from benchmarks.load import run_load
from benchmarks.texts import texts as load_texts

RESULTS = Path(__file__).parent / "results"
GRID = [(1, 1, "short"), (32, 1, "short"), (128, 1, "short"), (32, 32, "passage")]
QUICK_GRID = [(1, 1, "short"), (8, 1, "short"), (4, 8, "passage")]
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.onnx", "*.onnx_data")


def random_weights_copy(source: Path, target: Path, seed: int = 0) -> Path:
    """Copy the sentence-transformers folder `source` to `target` with the transformer's
    weights replaced by a random initialisation from its own config (same architecture,
    tokenizer, pooling and Dense shapes). ONNX files are not copied."""
    import torch
    from transformers import AutoConfig, AutoModel

    from service.artifacts import transformer_dir

    source, target = Path(source), Path(target)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("onnx", *WEIGHT_PATTERNS))
    src_transformer = transformer_dir(source)
    dst_transformer = target / src_transformer.relative_to(source)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(src_transformer))
    model.save_pretrained(dst_transformer, safe_serialization=True)
    for weights in source.rglob("*.safetensors"):  # Dense layers and the like: keep
        relative = weights.relative_to(source)
        if not (target / relative).exists():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(weights, target / relative)
    return target


def weightless_copy(source: Path, target: Path) -> Path:
    """Copy the sentence-transformers folder `source` to `target` without the transformer's
    weights and without ONNX files: config, tokenizer, pooling and Dense layers only, all
    that `random_weights_copy` reads, small enough to carry to a GPU host."""
    from service.artifacts import transformer_dir

    source, target = Path(source), Path(target)
    transformer = transformer_dir(source).resolve()
    skip_weights = shutil.ignore_patterns(*WEIGHT_PATTERNS)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {"onnx"} & set(names)
        if Path(folder).resolve() == transformer:
            skipped |= set(skip_weights(folder, names))
        return skipped

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=ignore)
    return target


class GpuSampler:
    """Mean and peak GPU utilisation (%) of device 0 while active, via pynvml; None when
    pynvml or an NVIDIA GPU is missing."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no pynvml, no driver, no GPU: not measured
            self._nvml = None

    def __enter__(self) -> GpuSampler:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, float | None]:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {
            "gpu_util_mean": round(sum(self.samples) / len(self.samples), 1),
            "gpu_util_max": float(max(self.samples)),
        }


class InProcessCeiling:
    """The served pipeline without HTTP or batching: tokenised texts -> backend -> pooling,
    built by the service's own factory (`service.engine.pipeline.served_pipeline`)."""

    def __init__(self, model: Path, backend: str, device: str) -> None:
        from service.config import Settings
        from service.engine.pipeline import served_pipeline

        settings = Settings(_env_file=None, model=str(model), backend=backend, device=device)
        self.pipeline = served_pipeline(settings)

    def sentences_per_s(self, corpus: list[str], batch: int, seconds: float) -> float:
        """Sentences/s at a fixed batch size, tokenising outside the timed loop."""
        batch = max(1, min(batch, len(corpus)))
        chunks = [
            self.pipeline.tokenizer.encode(corpus[i : i + batch], truncate=True)
            for i in range(0, len(corpus) - batch + 1, batch)
        ][:64]
        self.pipeline.encoder.embed(chunks[0])  # warm-up
        done, started, i = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            self.pipeline.encoder.embed(chunks[i % len(chunks)])
            done, i = done + batch, i + 1
        return done / (time.perf_counter() - started)

    def close(self) -> None:
        self.pipeline.close()


def serve(model: Path, backend: str, device: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model", str(model), "--backend", backend, "--device", device,
               "--max-queued-inputs", "100000", "--log-level", "warning",
               # a capacity measurement: closed-loop clients never outrun the queue, so the
               # admission bound (5 s by default, 429s on a slow host) is lifted
               "--max-queue-wait-s", "60", "--request-timeout-s", "120", *extra]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
    except Exception:
        stop(proc)
        raise
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_grid(url: str, proc: subprocess.Popen, grid, duration: float, data) -> list[dict]:
    rows = []
    for concurrency, inputs, length in grid:
        before = batch_histogram(url)
        with GpuSampler() as gpu:
            result = asyncio.run(run_load(url, "/embed", concurrency, inputs, length,
                                          requests=10**7, duration=duration,
                                          server_pid=proc.pid, data=data,
                                          client_kind="raw"))  # fmt: skip
        row = {**asdict(result), **histogram_delta(before, batch_histogram(url)), **gpu.summary()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def add_ceilings(rows: list[dict], ceiling: InProcessCeiling, seconds: float, data) -> None:
    """Each row gains the in-process sentences/s at the batch size the batcher formed."""
    for row in rows:
        batch = round(row.get("mean_batch_size") or row["inputs_per_request"])
        corpus = load_texts(row["length"], data)
        speed = ceiling.sentences_per_s(corpus, batch, seconds)
        row["ceiling_batch"] = batch
        row["ceiling_sentences_per_s"] = round(speed, 1)
        row["share_of_ceiling"] = round(row["sentences_per_s"] / speed, 3) if speed else None


def markdown(rows: list[dict]) -> str:
    lines = [
        "| load on /embed | sentences/s | p99 ms | mean batch | ceiling at that batch "
        "(sent/s) | share | server CPU % | GPU util mean/max % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gpu = (
            "not measured"
            if r.get("gpu_util_mean") is None
            else f"{r['gpu_util_mean']:.0f} / {r['gpu_util_max']:.0f}"
        )
        lines.append(
            f"| {r['concurrency']} clients x {r['inputs_per_request']} {r['length']} | "
            f"{r['sentences_per_s']:.0f} | {r['p99_ms']:.0f} | {r.get('mean_batch_size')} | "
            f"{r['ceiling_sentences_per_s']:.0f} | {r['share_of_ceiling']:.2f} | "
            f"{r['server_cpu_percent']} | {gpu} |"
        )
    return "\n".join(lines)


def machine() -> str:
    described = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            described += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return described


def exit_on_sigterm() -> None:
    """SIGTERM (`timeout`, a supervisor) raises SystemExit, so `finally` stops the server,
    which runs in its own session and would otherwise outlive this process."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="sentence-transformers folder (default: bundled)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="serve the model's architecture and tokenizer with random weights",
    )
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--duration", type=float, help="seconds per load point (default 15; --quick: 3)")
    p.add_argument("--quick", action="store_true", help="small grid, 3 s per point (CPU smoke)")
    p.add_argument("--data", help="shared data folder for real sentences")
    p.add_argument("--server-flags", default="", help="extra flags for python -m service")
    p.add_argument("--output", type=Path, default=RESULTS / "gpu.json")
    args = p.parse_args(argv)
    from service.config import bundled_model_path

    grid = QUICK_GRID if args.quick else GRID
    duration = args.duration or (3.0 if args.quick else 15.0)
    model = args.model or Path(bundled_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_weights:
            model = random_weights_copy(model, Path(tmp) / f"{model.name}-random")
        proc, url = serve(model, args.backend, args.device, args.server_flags.split())
        try:
            rows = run_grid(url, proc, grid, duration, args.data)
        finally:
            stop(proc)
        ceiling = InProcessCeiling(model, args.backend, args.device)
        add_ceilings(rows, ceiling, min(duration, 5.0), args.data)
        ceiling.close()
    save_report(args.output, "benchmarks.gpu", argv, rows, gpu_host=machine(),
                random_weights=args.random_weights, duration_per_point_s=duration)  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
