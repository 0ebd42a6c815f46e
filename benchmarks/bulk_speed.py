"""Indexing speed: the ways a user can turn a corpus into vectors, one machine, same texts.

Each contender runs in its own child process (clean memory, its own threads), in rounds
that interleave the contenders (this VM drifts: a ratio is read within a round):

  pipeline        the served pipeline in-process on length-sorted batches, its inference
                  workers' batches at once (the ceiling)
  job             python -m service.bulk embed (local engine), as a user runs it
  job-2proc       two such jobs at once, each on half the corpus with one ONNX Runtime
                  thread (processes instead of threads per session)
  job-ray         the same with --engine ray on a local Ray cluster (start included in wall,
                  not in its chunks/s)
  client-1, -4    a client loop posting batches of 64 to /v1/embeddings (1 or 4 clients)
  st              sentence-transformers `encode` (torch fp32, sorts by length itself)
  st-pool         sentence-transformers `encode` with a multi-process pool (one per core)

The model is the bundled one unless `--model` (any model folder; `--random-weights`: its
architecture and tokenizer with random weights, as on a GPU host where weights do not
travel); `--backend` and `--device` (e.g. torch on cuda) reach every contender through
EMBED_MODEL / EMBED_BACKEND / EMBED_DEVICE (sentence-transformers: the same folder and
device).

texts/s counts the embedding phase only (model loading and server start excluded; for the
job its own `chunks_per_s`, the loop from the first read to the last shard written).
Peak RSS (`--rss N,M`): the job's child max RSS for N and M short rows.

    python -m benchmarks.bulk_speed --kind short --n 4000 --rounds 2
    python -m benchmarks.bulk_speed --rss 20000,200000 --contenders job
    python -m benchmarks.bulk_speed --model DIR --random-weights --backend torch --device cuda \
        --contenders pipeline,job,st --n 20000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.compare import free_port, save_report, wait_healthy
from benchmarks.texts import passages, sentences

CONTENDERS = ("pipeline", "job", "job-2proc", "job-ray", "client-1", "client-4", "st", "st-pool")
CLIENT_BATCH = 64


def corpus(kind: str, n: int) -> list[str]:
    """`n` texts: stsb-multi-mt test sentences (en, de, es, fr) or ~128-token passages of
    them, repeated to reach `n`."""
    base = sentences(limit=8000)
    texts = passages(base) if kind == "passage" else base
    return [texts[i % len(texts)] for i in range(n)]


def write_jsonl(texts: list[str], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"d{i}", "text": text}, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ the contenders (child)


def run_pipeline(texts: list[str], batch_size: int) -> float:
    from service.config import Settings
    from service.engine.pipeline import served_pipeline

    pipeline = served_pipeline(Settings())
    started = time.perf_counter()
    items = pipeline.tokenizer.encode(texts, truncate=True)
    order = sorted(range(len(items)), key=lambda i: -items[i].length)
    batches = [
        [items[i] for i in order[begin : begin + batch_size]]
        for begin in range(0, len(order), batch_size)
    ]
    pipeline.embed_batches(batches)  # its inference workers' batches at once, as served
    return time.perf_counter() - started


def st_model_and_device() -> tuple[str, str]:
    """The folder and device the other contenders serve (EMBED_MODEL, EMBED_DEVICE), for
    sentence-transformers."""
    import torch

    from service.config import bundled_model_path

    model = os.environ.get("EMBED_MODEL") or bundled_model_path()
    device = os.environ.get("EMBED_DEVICE", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model, device


def run_st(texts: list[str], batch_size: int, pool: bool) -> float:
    from sentence_transformers import SentenceTransformer

    path, device = st_model_and_device()
    model = SentenceTransformer(path, device=device)
    model.encode(texts[:batch_size], batch_size=batch_size)  # CUDA context and kernels up
    if not pool:
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        return time.perf_counter() - started
    if device == "cuda":
        import torch

        targets = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        targets = ["cpu"] * (os.cpu_count() or 1)
    processes = model.start_multi_process_pool(targets)
    try:
        model.encode(texts[:64], batch_size=batch_size, pool=processes)  # workers loaded
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size, pool=processes)
        return time.perf_counter() - started
    finally:
        model.stop_multi_process_pool(processes)


def run_clients(texts: list[str], clients: int) -> float:
    import concurrent.futures

    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
         "--max-queue-wait-s", "30", "--request-timeout-s", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_healthy(url, server)
        batches = [texts[i : i + CLIENT_BATCH] for i in range(0, len(texts), CLIENT_BATCH)]

        def client(part: list[list[str]]) -> None:
            with httpx.Client(timeout=300) as http:
                for batch in part:
                    answer = http.post(f"{url}/v1/embeddings", json={"input": batch})
                    answer.raise_for_status()

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, [batches[i::clients] for i in range(clients)]))
        return time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=60)


def run_job(
    texts: list[str], batch_size: int, engine: str, processes: int = 1
) -> tuple[float, float]:
    """(seconds of the job's loop, wall seconds of the whole command). `processes` > 1:
    that many local jobs at once, each on its share of the corpus with one ONNX Runtime
    thread per core it gets (processes instead of threads); the loop seconds are then the
    slowest job's (they run side by side)."""
    with tempfile.TemporaryDirectory() as tmp:
        commands, outputs = [], []
        threads = max(1, (os.cpu_count() or 1) // processes) if processes > 1 else 0
        for part in range(processes):
            source, out = Path(tmp) / f"corpus{part}.jsonl", Path(tmp) / f"out{part}"
            write_jsonl(texts[part::processes], source)
            commands.append([sys.executable, "-m", "service.bulk", "embed", str(source),
                             "--output", str(out), "--id-field", "id", "--no-progress",
                             "--batch-size", str(batch_size), "--engine", engine])  # fmt: skip
            outputs.append(out)
        env = {**os.environ, "EMBED_INTRA_OP_THREADS": str(threads)} if threads else None
        started = time.perf_counter()
        jobs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, env=env) for c in commands]
        if any(job.wait() != 0 for job in jobs):
            raise RuntimeError("a job failed")
        wall = time.perf_counter() - started
        loops = []
        for out in outputs:
            summary = json.loads((out / "manifest.json").read_text())["summary"]
            loops.append(summary["chunks"] / summary["chunks_per_s"])
        return max(loops), wall


def child(contender: str, kind: str, n: int, batch_size: int) -> dict:
    texts = corpus(kind, n)
    wall = None
    if contender == "pipeline":
        seconds = run_pipeline(texts, batch_size)
    elif contender in ("job", "job-ray"):
        seconds, wall = run_job(texts, batch_size, "ray" if contender == "job-ray" else "local")
    elif contender == "job-2proc":
        seconds, wall = run_job(texts, batch_size, "local", processes=2)
    elif contender.startswith("client-"):
        seconds = run_clients(texts, int(contender.split("-")[1]))
    elif contender in ("st", "st-pool"):
        seconds = run_st(texts, batch_size, pool=contender == "st-pool")
    else:
        raise ValueError(f"unknown contender {contender!r}: one of {CONTENDERS}")
    row = {"contender": contender, "kind": kind, "texts": n, "seconds": round(seconds, 2),
           "texts_per_s": round(n / seconds, 1)}  # fmt: skip
    for name in ("EMBED_MODEL", "EMBED_BACKEND", "EMBED_DEVICE"):
        if os.environ.get(name):
            row[name.removeprefix("EMBED_").lower()] = os.environ[name]
    if wall is not None:
        row["command_wall_s"] = round(wall, 2)
    return row


# ------------------------------------------------------------------ the parent


def measure(contender: str, kind: str, n: int, batch_size: int) -> dict:
    """Run one contender in a child process; its row plus the child's peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    command = [sys.executable, "-m", "benchmarks.bulk_speed", "--child", contender,
               "--kind", kind, "--n", str(n), "--batch-size", str(batch_size)]  # fmt: skip
    pid = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _ = pid.communicate()
    if pid.returncode != 0:
        return {"contender": contender, "kind": kind, "texts": n, "error": pid.returncode}
    row = json.loads(out.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of any child so far: exact only when it grew
    row["peak_rss_mb"] = round(after / 1024, 1) if after > before else None
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--kind", choices=["short", "passage"], default="short")
    parser.add_argument("--n", type=int, default=4000, help="texts per contender")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss", default=None, help="N,M: the job's peak RSS for N and M rows")
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument(
        "--random-weights", action="store_true", help="the model's architecture, random weights"
    )
    parser.add_argument("--backend", choices=["onnx", "torch"], default=None)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.kind, args.n, args.batch_size)), flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        serve_in_children(args, Path(tmp))
        run_parent(args, argv)


def serve_in_children(args: argparse.Namespace, tmp: Path) -> None:
    """Point every child at the model, backend and device asked for (EMBED_* variables)."""
    model = args.model
    if args.random_weights:
        from benchmarks.gpu import random_weights_copy
        from service.config import bundled_model_path

        model = Path(model or bundled_model_path())
        model = random_weights_copy(model, tmp / f"{model.name}-random")
    for name, value in (("EMBED_MODEL", model), ("EMBED_BACKEND", args.backend),
                        ("EMBED_DEVICE", args.device)):  # fmt: skip
        if value is not None:
            os.environ[name] = str(value)


def run_parent(args: argparse.Namespace, argv: list[str] | None) -> None:
    rows = []
    if args.rss:
        for n in (int(v) for v in args.rss.split(",")):
            rows.append(measure("job", "short", n, args.batch_size))
            print(json.dumps(rows[-1]), flush=True)
    else:
        for round_index in range(args.rounds):
            for contender in args.contenders.split(","):
                row = measure(contender, args.kind, args.n, args.batch_size)
                row["round"] = round_index + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
    output = args.output or Path("benchmarks/results") / f"bulk_speed_{args.kind}.json"
    save_report(output, "benchmarks.bulk_speed", argv, rows)


if __name__ == "__main__":
    main()
