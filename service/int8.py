"""Batch-invariant int8 ONNX: per-token activation quantisation, built from `model.onnx`.

onnxruntime's dynamic quantisation (what sentence-transformers'
`export_dynamic_quantized_onnx_model` builds) computes one activation scale over the whole
batch tensor, so a text's vector moves with its neighbours and their padding (cosine 0.95
measured for the same text alone and batched). Here every MatMul with a constant weight
[K, N] becomes:

- weights: int8, symmetric, one scale per output column (quantised once, in the file),
  on 7 bits (-63..63, WEIGHT_LEVELS): x86 CPUs without VNNI (AVX2) multiply u8 x s8 with
  `vpmaddubsw`, which adds two products into a saturating int16; 255 x 127 x 2 overflows
  it, 255 x 63 x 2 does not, so the integer product is exact on every x86 host (measured on
  an AVX2 AMD EPYC: 8-bit weights min cosine 0.926 to fp32, failing the 0.99 bar; 7-bit
  0.9938, passing; docs/benchmarks.md "Multi-input requests");
- activations: uint8 with one scale and zero point per token row, computed at run time
  from that row alone (its [min, max] onto 0..255; `QuantizeLinear` with one block per
  row, opset 21), so a row's result never depends on other rows: batch-invariant by
  construction, and exact integer arithmetic inside `MatMulInteger` (u8 x s8);
- y = (int32 product - zero_point x column sums) x row_scale x column_scale, in float;
- the value projection and attention-output MatMuls stay fp32 (KEEP_FP32), measured.

Measured quality and speed: docs/benchmarks.md, "Batch-invariant int8".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
# MatMuls left in fp32 by default: the value projection and the attention output (node-name
# parts of optimum's BERT/XLM-R exports). Measured on the bundled model (docs/benchmarks.md):
# all-int8 keeps 98.8 % of fp32's en-de STS Spearman (min cosine 0.9918); with these two
# in fp32, 99.9 % (min cosine 0.9954), at a small speed cost.
KEEP_FP32 = ("attention/self/value", "attention/output")
# Weight quantisation levels each side of zero: 7 bits, exact on AVX2 as well as VNNI (see
# the module doc; onnxruntime's `reduce_range` for the same reason).
WEIGHT_LEVELS = 63


def constant_weights(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {
        init.name: numpy_helper.to_array(init)
        for init in model.graph.initializer
        if len(init.dims) == 2
    }


def _row_quantize_nodes(helper, TensorProto, x: str, k: int, p: str, c: str, asymmetric: bool):
    """Nodes quantising activation `x` [..., K] to uint8 row by row (QuantizeLinear with one
    block per row, opset 21): returns (nodes, names of xq [..., K] uint8, zero point
    [..., 1] float, scale [..., 1] float)."""
    if asymmetric:  # the row's [min(x, 0), max(x, 0)] onto 0..255
        nodes = [
            helper.make_node("ReduceMax", [x, c + "axes"], [p + "hi"], keepdims=1),
            helper.make_node("ReduceMin", [x, c + "axes"], [p + "lo"], keepdims=1),
            helper.make_node("Min", [p + "lo", c + "zero_f"], [p + "lo0"]),
            helper.make_node("Max", [p + "hi", c + "zero_f"], [p + "hi0"]),
            helper.make_node("Sub", [p + "hi0", p + "lo0"], [p + "range"]),
            helper.make_node("Max", [p + "range", c + "eps"], [p + "range_e"]),
            helper.make_node("Div", [p + "range_e", c + "levels"], [p + "xscale"]),
            helper.make_node("Div", [p + "lo0", p + "xscale"], [p + "lo_s"]),
            helper.make_node("Round", [p + "lo_s"], [p + "lo_r"]),
            helper.make_node("Neg", [p + "lo_r"], [p + "zp"]),
        ]
    else:  # symmetric: [-max|x|, max|x|] onto 1..255, zero point 128
        nodes = [
            helper.make_node("Abs", [x], [p + "abs"]),
            helper.make_node("ReduceMax", [p + "abs", c + "axes"], [p + "amax"], keepdims=1),
            helper.make_node("Max", [p + "amax", c + "eps"], [p + "amax_e"]),
            helper.make_node("Div", [p + "amax_e", c + "half_levels"], [p + "xscale"]),
            helper.make_node("Mul", [p + "xscale", c + "zero_f"], [p + "zeros"]),
            helper.make_node("Add", [p + "zeros", c + "mid"], [p + "zp"]),
        ]
    nodes += [
        helper.make_node("Cast", [p + "zp"], [p + "zp_u8"], to=TensorProto.UINT8),
        helper.make_node(
            "QuantizeLinear", [x, p + "xscale", p + "zp_u8"], [p + "xq"], axis=-1, block_size=k
        ),
    ]
    return nodes, p + "xq", p + "zp", p + "xscale"


def quantize_per_token(
    source: Path,
    target: Path,
    asymmetric: bool = True,
    keep_fp32: tuple[str, ...] = KEEP_FP32,
    weight_levels: int = WEIGHT_LEVELS,
) -> Path:
    """Rewrite every constant-weight MatMul of `source` into per-token int8 (module doc).

    Shapes: activation [..., K] x weight [K, N] -> [..., N], as the MatMul it replaces.
    y = (MatMulInteger(xq, wq) - zero_point x colsum(wq)) x row_scale x column_scale, where
    the zero-point correction is exact integer arithmetic. `asymmetric`: each row's
    [min, max] maps onto 0..255 (measured closer to fp32 than symmetric, which maps
    [-max|x|, max|x|] with zero point 128). MatMuls whose node name contains one of
    `keep_fp32` stay fp32; weights are rounded onto -weight_levels..weight_levels. The
    source's metadata (its fingerprint) is kept.
    Raises ValueError when the graph has no such MatMul, or its opset is below 18."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 18:
        raise ValueError(f"{source}: opset {opset}; per-token int8 needs opset >= 18")
    for entry in model.opset_import:  # blocked QuantizeLinear needs 21; 18-21 are compatible
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, 21)
    weights = constant_weights(model)
    graph, c = model.graph, "pt_"
    new_nodes, replaced, quantized = [], set(), {}
    constants = {"eps": 1e-12, "zero_f": 0.0}
    constants.update({"levels": 255.0} if asymmetric else {"half_levels": 127.0, "mid": 128.0})
    new_inits = [
        numpy_helper.from_array(np.array(value, np.float32), c + name)
        for name, value in constants.items()
    ] + [numpy_helper.from_array(np.array([-1], np.int64), c + "axes")]
    for node in graph.node:
        kept_fp32 = any(part in node.name for part in keep_fp32)
        if node.op_type != "MatMul" or node.input[1] not in weights or kept_fp32:
            new_nodes.append(node)
            continue
        w = weights[node.input[1]].astype(np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / weight_levels  # [N]
        w_q = np.clip(np.round(w / w_scale), -weight_levels, weight_levels).astype(np.int8)
        p = f"pt{len(replaced)}_"
        new_inits += [
            numpy_helper.from_array(w_q, p + "wq"),
            numpy_helper.from_array(w_scale.astype(np.float32), p + "wscale"),
            numpy_helper.from_array(w_q.astype(np.float32).sum(axis=0), p + "colsum"),
        ]
        replaced.add(node.input[1])
        nodes = []
        if node.input[0] not in quantized:  # Q, K and V share one quantised input
            nodes, *outputs = _row_quantize_nodes(
                helper, TensorProto, node.input[0], w.shape[0], p, c, asymmetric
            )
            quantized[node.input[0]] = outputs
        xq, zp, xscale = quantized[node.input[0]]
        # The zero-point Sub sits between Cast and Mul on purpose: onnxruntime's
        # MatMulIntegerToFloat fusion (MatMulInteger -> Cast -> Mul) takes the scale for a
        # per-tensor or per-column one and silently breaks a per-row scale (measured:
        # cosine 0.70 to fp32 with the fusion, 0.996 without).
        new_nodes += nodes + [
            helper.make_node("MatMulInteger", [xq, p + "wq"], [p + "y32"]),
            helper.make_node("Cast", [p + "y32"], [p + "yf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [zp, p + "colsum"], [p + "corr"]),
            helper.make_node("Sub", [p + "yf", p + "corr"], [p + "yc"]),
            helper.make_node("Mul", [xscale, p + "wscale"], [p + "scale"]),
            helper.make_node("Mul", [p + "yc", p + "scale"], [node.output[0]], name=node.name),
        ]
    if not replaced:
        raise ValueError(f"{source}: no MatMul with a constant weight to quantise")
    kept = [init for init in graph.initializer if init.name not in replaced]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    partial = Path(target).with_name(Path(target).name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(target)  # readers never see a half-written file
    log.info("per-token int8: %d MatMuls quantised -> %s", len(replaced), target)
    return target
