"""Is pooling inside the ONNX graph, or IO binding, worth it on this host? Per-batch time of
the served ONNX file three ways, interleaved so machine load hits them alike:

  host     what the service does: Session.run -> [batch, seq, hidden] -> mean pooling in numpy
  graph    the same file with mean pooling appended to the graph (output [batch, hidden])
  binding  Session.run_with_iobinding into a preallocated output buffer, then numpy pooling

    python -m benchmarks.onnx_pooling [--file PATH] [--rounds 5] [--batches 10]

Prints the median milliseconds per batch for short texts (batch 64) and passages (batch 32)
and the largest difference between the variants' vectors. Only for a mean-pooled model
(the bundled all-MiniLM-L6-v2 by default).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def pooled_graph(source: Path, target: Path) -> Path:
    """`source` with masked mean pooling of its first output appended: output `pooled`
    [batch, hidden] = sum_t mask * hidden / max(sum_t mask, 1e-9)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    hidden = graph.output[0].name
    graph.initializer.extend(
        [
            helper.make_tensor("pool_axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("pool_axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("pool_eps", TensorProto.FLOAT, [], [1e-9]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["pool_mask", "pool_axis2"], ["pool_mask3"]),
            helper.make_node("Mul", [hidden, "pool_mask3"], ["pool_masked"]),
            helper.make_node("ReduceSum", ["pool_masked", "pool_axis1"], ["pool_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["pool_mask", "pool_axis1"], ["pool_count"], keepdims=1),
            helper.make_node("Max", ["pool_count", "pool_eps"], ["pool_count_safe"]),
            helper.make_node("Div", ["pool_sum", "pool_count_safe"], ["pooled"]),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None))
    onnx.save(model, str(target))
    return target


def session(file: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])


def feeds_for(pipeline, texts: list[str]) -> dict[str, np.ndarray]:
    from service.engine.encoder import pad_batch

    ids, mask, types = pad_batch(pipeline.tokenizer.encode(texts), pipeline.tokenizer.pad_id)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def variants(host, graph, head, feeds, hidden: int):
    """name -> a function running one batch and returning [batch, hidden]."""
    mask = feeds["attention_mask"]
    output = host.get_outputs()[0].name
    inputs = {i.name for i in host.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in inputs}
    shape = (*mask.shape, hidden)
    buffer = np.empty(shape, dtype=np.float32)
    binding = host.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    binding.bind_output(output, "cpu", 0, np.float32, list(shape), buffer.ctypes.data)

    def run_host():
        (tokens,) = host.run([output], feeds)
        return head(tokens, mask)

    def run_graph():
        return graph.run(["pooled"], feeds)[0]

    def run_binding():
        host.run_with_iobinding(binding)
        return head(buffer, mask)

    return {"host": run_host, "graph": run_graph, "binding": run_binding}


def main() -> None:
    from benchmarks.texts import texts as load_texts
    from service.config import bundled_model_path
    from service.engine.pipeline import onnx_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=bundled_model_path())
    parser.add_argument("--file", type=Path, required=True, help="the served ONNX file")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10, help="batches per round and variant")
    args = parser.parse_args()
    pipeline = onnx_pipeline(args.model, args.file)
    if pipeline.spec.pooling != ("mean",) or pipeline.spec.dense:
        raise SystemExit("only a mean-pooled model without Dense layers is measured here")
    host = session(args.file)
    with tempfile.TemporaryDirectory() as tmp:
        graph = session(pooled_graph(args.file, Path(tmp) / "pooled.onnx"))
    for kind, batch in (("short", 64), ("passage", 32)):
        feeds = feeds_for(pipeline, load_texts(kind)[:batch])
        runs = variants(host, graph, pipeline.encoder.head, feeds, pipeline.spec.hidden_size)
        reference = runs["host"]()
        gap = max(float(np.abs(run() - reference).max()) for run in runs.values())
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                started = time.perf_counter()
                for _ in range(args.batches):
                    run()
                times[name].append((time.perf_counter() - started) / args.batches * 1e3)
        shape = feeds["input_ids"].shape
        figures = ", ".join(f"{n} {statistics.median(t):.2f}" for n, t in times.items())
        rounds = f"median of {args.rounds} rounds x {args.batches}"
        print(f"{kind} batch {shape[0]} x {shape[1]} tokens: ms per batch ({rounds}): "
              f"{figures}; max |diff| {gap:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
