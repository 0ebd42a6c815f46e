"""Which kernel is fastest per batch shape on this host: the served pipeline (tokeniser,
pooling, Dense) over different backends, timed interleaved on length-sorted batches of the
same texts, so the machine's drift hits every backend alike.

    python -m benchmarks.kernels [--batches 1,8,32,64] [--seconds 1.5] [--rounds 3]
        [--backends onnx-fp32,onnx-int8,torch,onnx-fp32-spin] [--data ../shared/data]
    python -m benchmarks.kernels --window 256 [--overheads 4,16,64]   # the batcher's cut

Backends: onnx-fp32 (model.onnx as served), onnx-int8 (the per-token int8 file),
onnx-fp32-spin (model.onnx with ORT's idle worker threads spinning), onnx-fp32-1t and
onnx-int8-1t (one intra-op thread), torch (fp32). Prints the
median sentences/s per (backend, batch) over rounds and the ratio to onnx-fp32, and writes
JSON. Also reports, per backend, the min cosine of its vectors to onnx-fp32's on the texts
and its batch invariance (service.variants), the bars a large-batch backend must pass.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.compare import RESULTS, prepare_model, save_report
from benchmarks.texts import texts as load_texts


def make_backend(name: str, model: Path):
    """A backend of the served pipeline by benchmark name."""
    from service.artifacts import FP32_FILE, PER_TOKEN_INT8_FILE
    from service.backends.onnx import OnnxBackend
    from service.backends.torch import TorchBackend

    onnx = model / "onnx"
    if name == "onnx-fp32":
        return OnnxBackend(onnx / FP32_FILE, "cpu")
    if name == "onnx-int8":
        return OnnxBackend(onnx / PER_TOKEN_INT8_FILE, "cpu")
    if name == "onnx-fp32-1t":  # one intra-op thread
        return OnnxBackend(onnx / FP32_FILE, "cpu", threads=1)
    if name == "onnx-int8-1t":
        return OnnxBackend(onnx / PER_TOKEN_INT8_FILE, "cpu", threads=1)
    if name == "onnx-fp32-spin":
        backend = OnnxBackend(onnx / FP32_FILE, "cpu")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        backend.session = ort.InferenceSession(
            str(onnx / FP32_FILE), options, providers=["CPUExecutionProvider"]
        )
        return backend
    if name == "torch":
        return TorchBackend(str(model), "cpu")
    raise ValueError(f"unknown backend {name}")


def sorted_batches(pipeline, corpus: list[str], size: int) -> list[list]:
    """The corpus tokenised, sorted by token length, cut into batches of `size`."""
    tokens = sorted(pipeline.tokenizer.encode(corpus), key=lambda t: t.length)
    return [tokens[i : i + size] for i in range(0, len(tokens) - size + 1, size)]


def time_backend(pipeline, batches: list[list], seconds: float, start: int) -> float:
    """sentences/s of `pipeline.encoder.embed` over consecutive batches for `seconds`."""
    done, index, began = 0, start, time.perf_counter()
    while time.perf_counter() - began < seconds:
        batch = batches[index % len(batches)]
        pipeline.encoder.embed(batch)
        done, index = done + len(batch), index + 1
    return done / (time.perf_counter() - began)


def parity(pipelines: dict, corpus: list[str], reference: str = "onnx-fp32") -> dict:
    """Per backend: min cosine to `reference` on the first 256 texts, and batch invariance."""
    from service.parity import batch_invariance, cosine_stats

    texts = corpus[:256]
    ref = pipelines[reference].encode(texts, batch_size=64)
    out = {}
    for name, pipeline in pipelines.items():
        mean, minimum = cosine_stats(pipeline.encode(texts, batch_size=64), ref)
        out[name] = {"mean_cosine": round(mean, 6), "min_cosine": round(minimum, 6),
                     "batch_invariance": round(batch_invariance(pipeline), 7)}  # fmt: skip
    return out


def plan_figures(
    pipelines: dict,
    corpus: list[str],
    window: int,
    overheads: list[int],
    seconds: float,
    rounds: int,
) -> list[dict]:
    """The batcher's cut of a window, timed: shuffled windows of `window` texts run as one
    sorted batch (`one`) or as `plan_batches` cuts them with each per-call overhead in
    `overheads` (padded tokens), interleaved per round. sentences/s per (backend, plan)."""
    import random

    from service.engine.batcher import BatchLimits, WorkItem, plan_batches

    limits = BatchLimits(16384, 256, 0.0, 100_000)
    texts = list(corpus)
    random.Random(0).shuffle(texts)
    tokens = next(iter(pipelines.values())).tokenizer.encode(texts)
    windows = [tokens[i : i + window] for i in range(0, len(tokens) - window + 1, window)]
    plans: dict[str, list[list[list]]] = {"one": [[sorted(w, key=lambda t: t.length)]
                                                  for w in windows]}  # fmt: skip
    for overhead in overheads:
        plans[f"cut-{overhead}"] = [
            [[it.text for it in b] for b in plan_batches([WorkItem(t, None, 0, 0.0) for t in w],
                                                         limits, overhead)]
            for w in windows
        ]  # fmt: skip
    rates: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds):
        for name, pipeline in pipelines.items():
            for plan, cut in plans.items() if round_ % 2 == 0 else list(plans.items())[::-1]:
                done, index, began = 0, round_, time.perf_counter()
                while time.perf_counter() - began < seconds:
                    for batch in cut[index % len(cut)]:
                        pipeline.encoder.embed(batch)
                    done, index = done + window, index + 1
                rates.setdefault((name, plan), []).append(done / (time.perf_counter() - began))
    rows = []
    for (name, plan), values in rates.items():
        batches = sum(len(c) for c in plans[plan]) / len(plans[plan])
        rows.append({"backend": name, "window": window, "plan": plan,
                     "batches_per_window": round(batches, 2),
                     "sentences_per_s": round(statistics.median(values), 1),
                     "per_round": [round(v, 1) for v in values]})  # fmt: skip
        print(f"window {window} {name:12s} {plan:8s} {batches:5.1f} batches "
              f"{statistics.median(values):7.1f} sent/s  {[round(v) for v in values]}")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    from service.engine.pipeline import build_pipeline

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="onnx-fp32,onnx-int8,torch")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--length", choices=["short", "passage"], default="short")
    p.add_argument("--seconds", type=float, default=1.5, help="per (backend, batch, round)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=int, help="time the batcher's cut of windows this large "
                   "instead (one sorted batch against plan_batches)")  # fmt: skip
    p.add_argument("--overheads", default="4,16,64", help="per-call overheads for --window")
    p.add_argument("--data")
    p.add_argument("--output", type=Path, default=RESULTS / "kernels.json")
    args = p.parse_args(argv)
    model = prepare_model(RESULTS / "models")
    names = args.backends.split(",")
    pipelines = {n: build_pipeline(model, lambda spec, n=n: make_backend(n, model)) for n in names}
    corpus = load_texts(args.length, args.data)
    if args.window:
        overheads = [int(x) for x in args.overheads.split(",")]
        rows = plan_figures(pipelines, corpus, args.window, overheads, args.seconds, args.rounds)
        save_report(args.output, "benchmarks.kernels", argv, rows, seconds=args.seconds,
                    rounds=args.rounds)  # fmt: skip
        return
    sizes = [int(b) for b in args.batches.split(",")]
    batches = {s: sorted_batches(pipelines[names[0]], corpus, s) for s in sizes}
    for pipeline in pipelines.values():  # warm-up
        for size in sizes:
            pipeline.encoder.embed(batches[size][len(batches[size]) // 2])
    figures: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for size in sizes:
            order = names if round_ % 2 == 0 else names[::-1]
            start = (round_ * 7) % len(batches[size])
            for name in order:
                rate = time_backend(pipelines[name], batches[size], args.seconds, start)
                figures.setdefault((name, size), []).append(rate)
    rows = []
    for size in sizes:
        base = statistics.median(figures[(names[0], size)])
        for name in names:
            median = statistics.median(figures[(name, size)])
            rows.append({"backend": name, "batch": size, "length": args.length,
                         "sentences_per_s": round(median, 1),
                         "per_round": [round(x, 1) for x in figures[(name, size)]],
                         f"ratio_to_{names[0]}": round(median / base, 2)})  # fmt: skip
            print(f"batch {size:4d} {name:16s} {median:8.1f} sent/s  x{median / base:.2f}  "
                  f"rounds {[round(x) for x in figures[(name, size)]]}")  # fmt: skip
    checks = parity(pipelines, corpus, names[0]) if names[0] == "onnx-fp32" else {}
    for name, check in checks.items():
        print(name, check)
    save_report(args.output, "benchmarks.kernels", argv, rows, parity=checks,
                seconds=args.seconds, rounds=args.rounds)  # fmt: skip


if __name__ == "__main__":
    main()
