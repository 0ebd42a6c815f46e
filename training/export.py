"""ONNX export of a sentence-transformers model folder: fp32, graph optimisation (O1-O4),
int8 (batch-invariant per-token, or onnxruntime's dynamic quantisation) and fp16, with a
parity, batch-invariance and speed report.

    python -m training.export --model PATH [--optimize O2] [--quantize pertoken] [--fp16] [--all]

Files land in the folder's `onnx/` under the names sentence-transformers' ONNX backend uses
(`model.onnx`, `model_O2.onnx`, `model_qint8_pertoken.onnx`, `model_qint8_avx2.onnx`,
`model_fp16.onnx`), so `SentenceTransformer(path, backend="onnx", model_kwargs={"file_name":
"onnx/model_O2.onnx"})` loads each. Every file records the source fingerprint of the weights
it was made from (service.artifacts); a stale `model.onnx` (other weights, or no fingerprint)
is rebuilt first. `onnx/report.json` says which variants passed their parity bar and the
batch-invariance check; the service only picks those (see `EMBED_ONNX_FILE=auto`). The exit
status is 1 when `model.onnx` (served when nothing else passed) failed its parity check.
"""

from __future__ import annotations

import argparse
import logging
import platform
from pathlib import Path

from service import artifacts
from service.artifacts import (
    FP16_FILE,
    FP32_FILE,
    ONNX_SUBDIR,
    PER_TOKEN_INT8_FILE,
    transformer_dir,
)

log = logging.getLogger(__name__)
CPU_LEVELS = ("O1", "O2", "O3")
GPU_LEVELS = ("O4",)
PER_TOKEN = "pertoken"  # batch-invariant int8 (service.int8); the others: dynamic int8
QUANT_ARCHS = (PER_TOKEN, "avx512_vnni", "avx2", "arm64")


class GpuRequiredError(RuntimeError):
    """An fp16 / O4 export was asked for on a machine without CUDA."""


def export_fp32(model_dir: Path, target_dir: Path | None = None) -> Path:
    """Export the transformer of the sentence-transformers folder `model_dir` to
    `<target_dir or model_dir/onnx>/model.onnx` (service.artifacts.export_transformer_fp32:
    optimum, source fingerprint recorded), fresh or not."""
    target_dir = Path(target_dir) if target_dir else Path(model_dir) / ONNX_SUBDIR
    return artifacts.export_transformer_fp32(transformer_dir(model_dir), target_dir)


def cpu_quantization_arch() -> str:
    """The dynamic-quantisation config that suits this CPU."""
    if platform.machine().lower() in {"arm64", "aarch64"}:
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()


def require_gpu(what: str) -> None:
    """Fail before any work when a GPU-only variant is asked for without CUDA."""
    if not cuda_available():
        raise GpuRequiredError(
            f"{what} targets CUDA (fp16 kernels), but this machine has no usable CUDA device "
            "with onnxruntime-gpu: run the export on a GPU host (pip install "
            "'polyglot-embed[gpu]'), or use --optimize O1/O2/O3 and --quantize for CPU"
        )


def _onnx_sentence_transformer(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(model_dir),
        backend="onnx",
        device="cpu",
        model_kwargs={
            "file_name": f"{ONNX_SUBDIR}/{FP32_FILE}",
            "provider": "CPUExecutionProvider",
        },
    )


def export_optimized(model_dir: Path, level: str) -> Path:
    """`onnx/model_<level>.onnx` via optimum's ORTOptimizer (O4 needs CUDA)."""
    from sentence_transformers import export_optimized_onnx_model

    if level in GPU_LEVELS:
        require_gpu(f"--optimize {level}")
    export_optimized_onnx_model(_onnx_sentence_transformer(model_dir), level, str(model_dir))
    return Path(model_dir) / ONNX_SUBDIR / f"model_{level}.onnx"


def export_quantized(model_dir: Path, arch: str) -> Path:
    """`pertoken`: `onnx/model_qint8_pertoken.onnx`, batch-invariant int8 (service.int8).
    Else `onnx/model_qint8_<arch>.onnx` (`quint8` for avx2, whose weights are unsigned):
    onnxruntime's dynamic int8 via optimum, named as sentence-transformers names it; its
    activation scale spans the whole batch, so it fails the batch-invariance check."""
    onnx_dir = Path(model_dir) / ONNX_SUBDIR
    if arch == PER_TOKEN:
        from service.int8 import quantize_per_token

        return quantize_per_token(onnx_dir / FP32_FILE, onnx_dir / PER_TOKEN_INT8_FILE)
    from sentence_transformers import export_dynamic_quantized_onnx_model

    export_dynamic_quantized_onnx_model(_onnx_sentence_transformer(model_dir), arch, str(model_dir))
    return quantized_file(onnx_dir, arch)


def quantized_file(onnx_dir: Path, arch: str) -> Path:
    """The int8 file of `arch` in `onnx_dir` (qint8 or quint8 weights)."""
    for prefix in ("qint8", "quint8"):
        path = Path(onnx_dir) / f"model_{prefix}_{arch}.onnx"
        if path.exists():
            return path
    raise FileNotFoundError(f"no int8 model for {arch} in {onnx_dir}")


def convert_fp16(source: Path, target: Path) -> Path:
    """fp32 graph -> fp16 weights and compute, float32 inputs/outputs kept (for CUDA)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save(converted, str(target))
    return target


def export_fp16(model_dir: Path, allow_cpu: bool = False) -> Path:
    """`onnx/model_fp16.onnx` (CUDA only unless `allow_cpu`: conversion works anywhere, but
    fp16 on the CPU provider is slower than fp32 and is not what it is for)."""
    if not allow_cpu:
        require_gpu("--fp16")
    onnx_dir = Path(model_dir) / ONNX_SUBDIR
    return convert_fp16(onnx_dir / FP32_FILE, onnx_dir / FP16_FILE)


def export_variants(
    model_dir: Path,
    optimize: list[str] = (),
    quantize: list[str] = (),
    fp16: bool = False,
    data_dir: Path | None = None,
    report: bool = True,
    speed_seconds: float = 3.0,
) -> list[Path]:
    """Export fp32 (when missing) and every asked-for variant, then write the report.
    GPU-only variants are checked first, so nothing is half-done when one cannot run."""
    model_dir = Path(model_dir)
    if fp16:
        require_gpu("--fp16")
    for level in optimize:
        if level in GPU_LEVELS:
            require_gpu(f"--optimize {level}")
    fingerprint = artifacts.source_fingerprint(transformer_dir(model_dir))
    files = [fresh_fp32(model_dir, fingerprint)]
    files += [export_optimized(model_dir, level) for level in optimize]
    files += [export_quantized(model_dir, arch) for arch in quantize]
    if fp16:
        files.append(export_fp16(model_dir))
    for file in files[1:]:
        artifacts.stamp_file(file, fingerprint)  # derived from the fresh fp32 file
    if report:
        from training.export_report import write_report

        write_report(model_dir, [f.name for f in files], data_dir, speed_seconds)
    return files


def fresh_fp32(model_dir: Path, fingerprint: str) -> Path:
    """`onnx/model.onnx`, re-exported when missing or stale (exported from other weights,
    or without a fingerprint): the service's own check (service.artifacts.fresh_fp32)."""
    onnx_dir = Path(model_dir) / ONNX_SUBDIR
    return artifacts.fresh_fp32([onnx_dir], onnx_dir, transformer_dir(model_dir), fingerprint)


def failed_variants(model_dir: Path, files: list[Path]) -> list[str]:
    """Names among `files` whose report row did not pass parity and batch invariance."""
    fingerprint = artifacts.source_fingerprint(transformer_dir(model_dir))
    rows = artifacts.report_variants(Path(model_dir) / ONNX_SUBDIR, fingerprint)
    return [f.name for f in files if rows.get(f.name, {}).get("passed") is not True]


def export_default(model_dir: Path, data_dir: Path | None = None) -> list[Path]:
    """What `training.distill` exports at the end: fp32, O2 and batch-invariant int8."""
    return export_variants(
        Path(model_dir), optimize=["O2"], quantize=[PER_TOKEN], data_dir=data_dir
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, type=Path, help="sentence-transformers folder")
    parser.add_argument("--optimize", action="append", choices=CPU_LEVELS + GPU_LEVELS, default=[])
    parser.add_argument("--quantize", action="append", choices=QUANT_ARCHS, default=[])
    parser.add_argument("--fp16", action="store_true", help="fp16 model for CUDA")
    parser.add_argument(
        "--all", action="store_true", help="every variant this machine can build (GPU ones too)"
    )
    parser.add_argument("--data", type=Path, help="stsb-multi-mt root for the STS delta")
    parser.add_argument("--no-report", action="store_true", help="skip the parity/speed report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.all:
        args.optimize = list(CPU_LEVELS) + (list(GPU_LEVELS) if cuda_available() else [])
        args.quantize = [PER_TOKEN]
        args.fp16 = cuda_available()
    if not (args.model / "modules.json").exists() and not (args.model / "config.json").exists():
        parser.error(f"{args.model} is not a model folder")
    try:
        files = export_variants(
            args.model, args.optimize, args.quantize, args.fp16, args.data, not args.no_report
        )
    except GpuRequiredError as exc:
        parser.exit(2, f"error: {exc}\n")
    print("\n".join(str(f) for f in files))
    failed = [] if args.no_report else failed_variants(args.model, files)
    report = args.model / ONNX_SUBDIR / artifacts.REPORT_FILE
    if FP32_FILE in failed:  # the file served when nothing else passed: never exit 0
        parser.exit(1, f"error: {FP32_FILE} failed its parity check (see {report})\n")
    if failed:
        log.warning("%s failed parity or batch invariance (%s): `auto` never serves them",
                    ", ".join(failed), report)  # fmt: skip


if __name__ == "__main__":
    main()
