"""Parity and speed of each ONNX variant against the torch model: `onnx/report.json`.

Each variant runs through the service's own inference path (tokenizer, ONNX Runtime,
pooling, Dense, Normalize), so what passes here is exactly what the service serves."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
REPORT_FILE = "report.json"

# A fixed sample of real sentences (several languages, short and long).
SAMPLE = [
    "A man is playing a large flute.",
    "A woman is slicing an onion on a wooden board.",
    "Three men are playing chess in the park.",
    "The stock market fell sharply after the announcement of new tariffs.",
    "How do I reset my password if I no longer have access to my email account?",
    "Der Hund spielt im Garten.",
    "Ein Flugzeug hebt gerade ab.",
    "Die Regierung hat heute neue Maßnahmen zum Klimaschutz vorgestellt.",
    "Un hombre está tocando la guitarra.",
    "¿Dónde está la estación de tren más cercana?",
    "Le chat dort sur le canapé depuis ce matin.",
    "Les négociations ont repris à Bruxelles après une longue pause.",
    "Il treno per Roma parte alle nove.",
    "O gato está a dormir no sofá.",
    "De kinderen spelen buiten in de regen.",
    "Кошка спит на диване.",
    "北京是中国的首都。",
    "東京は日本の首都です。",
    "Rain.",
    "ok",
    "Retrieval-augmented generation combines a search index with a language model so that "
    "answers can cite the documents they were drawn from, which reduces hallucination and "
    "lets the system use knowledge that was not in the model's training data.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee will publish its findings in the spring.",
    "She forgot her umbrella at the restaurant.",
]
BARS = {"fp32": ("min", 0.9999), "int8": ("mean", 0.99), "fp16": ("mean", 0.999)}
STS_DELTA_BAR = 1.0


def variant_kind(file_name: str) -> str:
    if "int8" in file_name or "quantized" in file_name:
        return "int8"
    if "fp16" in file_name or "O4" in file_name:
        return "fp16"
    return "fp32"  # model.onnx and O1-O3 keep fp32 precision


class VariantEncoder:
    """The service's inference path over one ONNX file (numpy in, vectors out)."""

    def __init__(self, model_dir: Path, file: Path, device: str = "cpu") -> None:
        from service.backends.onnx import OnnxBackend
        from service.engine.encoder import SentenceEncoder, postprocess
        from service.engine.model_spec import load_model_spec
        from service.engine.tokenizer import ModelTokenizer

        self.spec = load_model_spec(model_dir)
        self.tokenizer = ModelTokenizer(self.spec.transformer_path, self.spec.max_seq_length)
        self.encoder = SentenceEncoder(self.spec, OnnxBackend(file, device), self.tokenizer.pad_id)
        self._postprocess = postprocess

    def encode(self, sentences: list[str], batch_size: int = 32, **_: object) -> np.ndarray:
        out = []
        for start in range(0, len(sentences), batch_size):
            tokens = self.tokenizer.encode(sentences[start : start + batch_size])
            out.append(self.encoder.embed(tokens))
        vectors = np.concatenate(out) if out else np.zeros((0, self.spec.dimension), np.float32)
        return self._postprocess(vectors, self.spec.normalize)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return float(cos.mean()), float(cos.min())


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
    from training.evaluate import cosine_rows, load_sts, spearman_x100

    s1, s2, gold = load_sts(data_dir, "en", limit=limit)
    if language != "en":
        _, s2, _ = load_sts(data_dir, language, limit=limit)
    vectors = encoder.encode(s1 + s2, batch_size=64)
    return spearman_x100(cosine_rows(vectors[: len(s1)], vectors[len(s1) :]), gold)


def judge(kind: str, mean: float, minimum: float, sts_delta: float | None) -> tuple[bool, str]:
    stat, bar = BARS[kind]
    value = minimum if stat == "min" else mean
    passed = value >= bar
    rule = f"{stat} cosine >= {bar}"
    if kind == "int8" and sts_delta is not None:
        passed = passed and abs(sts_delta) <= STS_DELTA_BAR
        rule += f" and |STS delta| <= {STS_DELTA_BAR}"
    return passed, rule


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
        kind = variant_kind(name)
        device = "cuda" if kind == "fp16" else "cpu"
        encoder = VariantEncoder(model_dir, file, device)
        mean, minimum = cosine_stats(encoder.encode(SAMPLE), reference)
        sts = sts_spearman(encoder, data_dir) if reference_sts is not None else None
        delta = None if sts is None else sts - reference_sts
        passed, rule = judge(kind, mean, minimum, delta)
        results[name] = {
            "kind": kind,
            "mean_cosine": round(mean, 6),
            "min_cosine": round(minimum, 6),
            "sts_spearman_en": sts,
            "sts_delta": delta,
            "size_mb": round(file.stat().st_size / 2**20, 1),
            "sentences_per_s_batch1": throughput(encoder, SAMPLE, 1, speed_seconds),
            "sentences_per_s_batch32": throughput(encoder, SAMPLE, 32, speed_seconds),
            "bar": rule,
            "passed": passed,
        }
        if not passed:
            log.warning(
                "%s failed its parity bar (%s): mean %.5f min %.5f", name, rule, mean, minimum
            )
    return results


def format_table(variants: dict) -> str:
    torch_b32 = variants["torch"]["sentences_per_s_batch32"]
    lines = [
        "| variant | mean cos | min cos | STS delta | MB | sent/s b1 | sent/s b32 "
        "| x torch b32 | parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in variants.items():
        if name == "torch":
            lines.append(
                f"| torch fp32 | 1 | 1 | 0 | | {row['sentences_per_s_batch1']:.0f} | "
                f"{torch_b32:.0f} | 1.00 | reference |"
            )
            continue
        delta = "" if row["sts_delta"] is None else f"{row['sts_delta']:+.2f}"
        lines.append(
            f"| {name} | {row['mean_cosine']:.5f} | {row['min_cosine']:.5f} | {delta} | "
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
    path = model_dir / "onnx" / REPORT_FILE
    variants = measure_variants(model_dir, files, data_dir, speed_seconds)
    previous = json.loads(path.read_text()).get("variants", {}) if path.exists() else {}
    previous.update(variants)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "sample_sentences": len(SAMPLE),
        "data": str(data_dir) if data_dir else None,
        "variants": previous,
    }
    path.write_text(json.dumps(report, indent=2))
    print(format_table(variants))
    return path
