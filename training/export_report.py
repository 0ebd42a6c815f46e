"""Parity, batch invariance and speed of each ONNX variant against the torch model:
`onnx/report.json` (rows stamped with the source fingerprint, service.artifacts).

Each variant runs through the service's own pipeline, built by the service's one factory
(`service.engine.model.onnx_pipeline`: tokenizer with the model's `do_lower_case`, ONNX
Runtime, pooling, Dense, Normalize), and its row is the one the service's start-up check
computes (`service.parity.parity_row`), so what passes here is exactly what the service
serves. A variant passes when its parity bar, the batch-invariance bar (a text's vector
alone vs inside batches of other texts, cosine >= 0.99999) and, for int8 with `--data`,
the STS bar (>= 99 % of the torch model's Spearman) all hold; this report adds STS, size
and speed figures to the row."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

from service import artifacts
from service.engine.model import onnx_pipeline
from service.parity import SAMPLE, STS_KEEP_BAR, cosine_stats, parity_row

log = logging.getLogger(__name__)
__all__ = ["SAMPLE", "STS_KEEP_BAR", "cosine_stats", "measure_variants", "write_report"]


def throughput(encoder, sentences: list[str], batch_size: int, seconds: float = 3.0) -> float:
    """Sentences per second at a fixed batch size (after one warm-up batch)."""
    batch = (sentences * (batch_size // len(sentences) + 1))[:batch_size]
    encoder.encode(batch, batch_size=batch_size)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode(batch, batch_size=batch_size)
        done += len(batch)
    return done / (time.perf_counter() - started)


def sts_spearman(encoder, data_dir: Path, language: str = "en", limit: int = 500) -> float:
    from training.metrics import sts_spearman
    from training.testsets import load_sts

    s1, s2, gold = load_sts(data_dir, "en", limit=limit)
    if language != "en":
        _, s2, _ = load_sts(data_dir, language, limit=limit)
    vectors = encoder.encode(s1 + s2, batch_size=64)
    return sts_spearman(vectors[: len(s1)], vectors[len(s1) :], gold)


def measure_variants(
    model_dir: Path, files: list[str], data_dir: Path | None = None, speed_seconds: float = 3.0
) -> dict:
    """Parity, STS delta, size and speed of each file in `model_dir/onnx`."""
    from sentence_transformers import SentenceTransformer

    model_dir = Path(model_dir)
    reference_model = SentenceTransformer(str(model_dir), device="cpu")
    reference = reference_model.encode(SAMPLE, batch_size=32)
    reference_sts = None
    if data_dir is not None and (Path(data_dir) / "stsb-multi-mt").is_dir():
        reference_sts = sts_spearman(reference_model, data_dir)
    results = {
        "torch": {
            "sentences_per_s_batch1": throughput(reference_model, SAMPLE, 1, speed_seconds),
            "sentences_per_s_batch32": throughput(reference_model, SAMPLE, 32, speed_seconds),
            "sts_spearman_en": reference_sts,
        }
    }
    for name in files:
        file = model_dir / "onnx" / name
        kind = artifacts.variant_kind(name)
        device = "cuda" if kind == "fp16" else "cpu"
        encoder = onnx_pipeline(model_dir, file, device)
        sts = sts_spearman(encoder, data_dir) if reference_sts is not None else None
        ratio = None if sts is None else sts / reference_sts
        row = parity_row(encoder, kind, reference, ratio)
        results[name] = {
            **row,
            "sts_spearman_en": sts,
            "sts_delta": None if sts is None else sts - reference_sts,
            "size_mb": round(file.stat().st_size / 2**20, 1),
            "sentences_per_s_batch1": throughput(encoder, SAMPLE, 1, speed_seconds),
            "sentences_per_s_batch32": throughput(encoder, SAMPLE, 32, speed_seconds),
        }
        encoder.close()
        if not row["passed"]:
            log.warning(
                "%s failed its bar (%s): mean %.5f min %.5f invariance %.7f",
                name, row["bar"], row["mean_cosine"], row["min_cosine"], row["batch_invariance"],
            )  # fmt: skip
    return results


def format_table(variants: dict) -> str:
    torch_b32 = variants["torch"]["sentences_per_s_batch32"]
    lines = [
        "| variant | mean cos | min cos | batch inv. | STS delta | MB | sent/s b1 | sent/s b32 "
        "| x torch b32 | checks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in variants.items():
        if name == "torch":
            lines.append(
                f"| torch fp32 | 1 | 1 | | 0 | | {row['sentences_per_s_batch1']:.0f} | "
                f"{torch_b32:.0f} | 1.00 | reference |"
            )
            continue
        delta = "" if row["sts_delta"] is None else f"{row['sts_delta']:+.2f}"
        lines.append(
            f"| {name} | {row['mean_cosine']:.5f} | {row['min_cosine']:.5f} | "
            f"{row['batch_invariance']:.6f} | {delta} | "
            f"{row['size_mb']} | {row['sentences_per_s_batch1']:.0f} | "
            f"{row['sentences_per_s_batch32']:.0f} | "
            f"{row['sentences_per_s_batch32'] / torch_b32:.2f} | "
            f"{'pass' if row['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def write_report(
    model_dir: Path, files: list[str], data_dir: Path | None = None, speed_seconds: float = 3.0
) -> Path:
    """Measure, print the table, and merge the results into `onnx/report.json`."""
    model_dir = Path(model_dir)
    variants = measure_variants(model_dir, files, data_dir, speed_seconds)
    fingerprint = artifacts.source_fingerprint(artifacts.transformer_dir(model_dir))
    path = artifacts.merge_report(
        model_dir / artifacts.ONNX_SUBDIR,
        variants,
        fingerprint,
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        sample_sentences=len(SAMPLE),
        data=str(data_dir) if data_dir else None,
    )
    print(format_table(variants))
    return path
