"""Static (calibrated) int8 quantisation, measured against the per-token method of
`service.int8` (see docs/benchmarks.md, "Batch-invariant int8")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.int8 import constant_weights


class _TextCalibration:
    """onnxruntime CalibrationDataReader over tokenised text (one sentence a feed, unpadded,
    so padding never enters the calibrated ranges)."""

    def __init__(self, model_dir: Path, sentences: list[str], input_names: set[str]) -> None:
        from service.engine.model_spec import load_model_spec
        from service.engine.tokenizer import ModelTokenizer

        spec = load_model_spec(model_dir)
        tokenizer = ModelTokenizer(spec.transformer_path, spec.max_seq_length)
        self.feeds = []
        for tokens in tokenizer.encode(sentences):
            ids = np.asarray([tokens.ids], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if "token_type_ids" in input_names:
                feed["token_type_ids"] = np.zeros_like(ids)
            self.feeds.append(feed)
        self._iter = iter(self.feeds)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def quantize_static_qdq(
    model_dir: Path, source: Path, target: Path, sentences: list[str], method: str = "MinMax"
) -> Path:
    """QDQ static int8 (uint8 activations, per-channel int8 weights) of the constant-weight
    MatMuls, ranges calibrated on `sentences` with `method` (MinMax, Percentile, Entropy)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    model = onnx.load(str(source), load_external_data=False)
    weights = constant_weights(model)
    excluded = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights
    ]
    names = {i.name for i in ort.InferenceSession(str(source)).get_inputs()}
    ort_quantize_static(
        str(source),
        str(target),
        _TextCalibration(model_dir, sentences, names),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=excluded,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return target
