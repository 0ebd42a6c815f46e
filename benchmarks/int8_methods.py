"""int8 methods compared on one model: batch invariance, parity to fp32, STS, speed.

    python -m benchmarks.int8_methods --model FOLDER --data ../shared/data [--seconds 2]

FOLDER needs `onnx/model.onnx` (fp32). Writes the int8 files next to it and prints one row
a method: the minimum cosine of a text's vector alone vs inside batches of other texts
(short, long, padded), mean/min cosine to fp32 (over the sample and every STS test
sentence), Spearman x100 on stsb-multi-mt test (en-en and en-de, all rows) and sentences/s
at batch 1 and 32 through the service's own path.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from service.engine.pipeline import load_model, onnx_pipeline
from service.int8 import constant_weights
from service.parity import SAMPLE, batch_invariance, cosine_stats
from training.export_report import throughput


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0, help="per speed measurement")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (median kept)")
    parser.add_argument("--speed-only", action="store_true", help="skip the quality pass")
    parser.add_argument(
        "--methods", default="fp32,dynamic,per_token,per_token_all,per_token_sym,static"
    )
    args = parser.parse_args(argv)
    from service.int8 import quantize_per_token
    from training.testsets import load_sts

    onnx_dir = args.model / "onnx"
    fp32 = onnx_dir / "model.onnx"
    files = {"fp32": fp32}
    methods = args.methods.split(",")
    if "dynamic" in methods:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        files["dynamic"] = onnx_dir / "model_qint8_dynamic.onnx"
        quantize_dynamic(str(fp32), str(files["dynamic"]), weight_type=QuantType.QInt8)
    if "per_token" in methods:
        files["per_token"] = quantize_per_token(fp32, onnx_dir / "model_qint8_pertoken.onnx")
    if "per_token_all" in methods:  # every MatMul in int8, none kept fp32
        target = onnx_dir / "model_qint8_pertoken_all.onnx"
        files["per_token_all"] = quantize_per_token(fp32, target, keep_fp32=())
    if "per_token_sym" in methods:
        target = onnx_dir / "model_qint8_pertoken_sym.onnx"
        files["per_token_sym"] = quantize_per_token(fp32, target, asymmetric=False)
    if "static" in methods:
        s1, s2, _ = load_sts(args.data, "en", split="train", limit=150)
        d1, _, _ = load_sts(args.data, "de", split="train", limit=150)
        calib = s1 + s2 + d1 + SAMPLE
        files["static"] = quantize_static_qdq(
            args.model, fp32, onnx_dir / "model_qint8_static.onnx", calib
        )
    en1, en2, gold = load_sts(args.data, "en")
    _, de2, _ = load_sts(args.data, "de")
    texts = SAMPLE + en1 + en2 + de2
    encoders = {method: onnx_pipeline(args.model, files[method]) for method in methods}
    if not args.speed_only:
        reference = encoders["fp32"].encode(texts) if "fp32" in encoders else None
        for method, encoder in encoders.items():
            print(method, json.dumps(quality(encoder, texts, gold, reference)), flush=True)
    # speed: methods interleaved round by round, so a change in machine load hits them all
    speeds = {(m, b): [] for m in methods for b in (1, 32)}
    for _ in range(args.rounds):
        for batch in (1, 32):
            for method, encoder in encoders.items():
                speeds[method, batch].append(throughput(encoder, SAMPLE, batch, args.seconds))
    for method in methods:
        row = {f"sent_s_b{b}": round(statistics.median(speeds[method, b]), 1) for b in (1, 32)}
        row["size_mb"] = round(files[method].stat().st_size / 2**20, 1)
        print(method, json.dumps(row), flush=True)


def quality(encoder, texts: list[str], gold, reference) -> dict:
    """Invariance, cosine to the reference and STS Spearman x100 (en-en, en-de)."""
    from training.metrics import cosine_rows, spearman_x100

    vectors = encoder.encode(texts)
    mean, minimum = cosine_stats(vectors, vectors if reference is None else reference)
    a, b, c = np.split(vectors[len(SAMPLE) :], 3)
    row = {
        "invariance_min_cosine": batch_invariance(encoder),
        "mean_cos_fp32": mean,
        "min_cos_fp32": minimum,
        "sts_en_en": spearman_x100(cosine_rows(a, b), gold),
        "sts_en_de": spearman_x100(cosine_rows(a, c), gold),
    }
    return {key: round(value, 6) for key, value in row.items()}


class _TextCalibration:
    """onnxruntime CalibrationDataReader over tokenised text (one sentence a feed, unpadded,
    so padding never enters the calibrated ranges)."""

    def __init__(self, model_dir: Path, sentences: list[str], input_names: set[str]) -> None:
        _, tokenizer = load_model(model_dir)
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


if __name__ == "__main__":
    main()
