"""ONNX export of a sentence-transformers model folder (optimum / onnxruntime).

python -m training.export --model PATH [--optimize O2] [--quantize avx2] [--fp16] [--all]
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
ONNX_SUBDIR = "onnx"
FP32_FILE = "model.onnx"


def transformer_dir(model_dir: Path) -> Path:
    """The folder of the Transformer module inside a sentence-transformers model folder."""
    model_dir = Path(model_dir)
    modules_file = model_dir / "modules.json"
    if modules_file.exists():
        for module in json.loads(modules_file.read_text()):
            if module["type"].endswith("Transformer"):
                return model_dir / module["path"]
    return model_dir


def export_fp32(model_dir: Path, target_dir: Path | None = None) -> Path:
    """Export the model's transformer to `<target_dir or model_dir/onnx>/model.onnx` with
    optimum (inputs input_ids, attention_mask[, token_type_ids]; output last_hidden_state)."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    target_dir = Path(target_dir) if target_dir else Path(model_dir) / ONNX_SUBDIR
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ort_model = ORTModelForFeatureExtraction.from_pretrained(
            str(transformer_dir(model_dir)), export=True, provider="CPUExecutionProvider"
        )
        ort_model.save_pretrained(tmp)
        exported = Path(tmp) / FP32_FILE
        target = target_dir / FP32_FILE
        shutil.move(str(exported), target)
        data = Path(tmp) / (FP32_FILE + "_data")
        if data.exists():  # models over 2 GB keep their weights beside the graph
            shutil.move(str(data), target_dir / data.name)
    log.info("exported %s", target)
    return target


def cpu_quantization_arch() -> str:
    """The dynamic-quantisation config that suits this CPU."""
    machine = platform.machine().lower()
    if machine in {"arm64", "aarch64"}:
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def export_default(model_dir: Path) -> list[Path]:
    """What `training.distill` exports at the end: fp32, O2 and int8 for this CPU."""
    from training.export_variants import export_variants

    return export_variants(Path(model_dir), optimize=["O2"], quantize=[cpu_quantization_arch()])
