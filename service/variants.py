"""Which ONNX file the service serves, and why.

On start (`prepare_onnx`):
1. the transformer folder's source fingerprint is computed (service.artifacts);
2. `model.onnx` is looked for in the model's `onnx/`, then in the export cache; a file
   whose recorded fingerprint differs (or is missing: older versions) is stale and is never
   served: fp32 is re-exported (into the folder when writable, else the cache) and a
   warning names the stale file;
3. with `onnx_file=auto`, the fastest variant whose report row (same fingerprint) passed
   both its parity bar and the batch-invariance check is served: on CPU that is the
   per-token int8 file, which is built and checked once on first start when missing
   (against fp32 on a fixed sample), then reused. Otherwise fp32.

The `reason` returned with the file is what /info shows as `variant_reason`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import artifacts
from service.artifacts import FP32_FILE, ONNX_SUBDIR, PER_TOKEN_INT8_FILE
from service.engine.pipeline import ModelPipeline, onnx_pipeline
from service.int8 import WEIGHT_LEVELS

log = logging.getLogger(__name__)

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
# Parity bars per kind: (statistic over the sample, bar), against the reference model.
BARS = {"fp32": ("min", 0.9999), "int8": ("min", 0.99), "fp16": ("mean", 0.999)}
INVARIANCE_BAR = 0.99999
INVARIANCE_PROBES = ["hello world", "Der Hund spielt im Garten.", "ok", SAMPLE[20]]
# Preference on CPU when the report has no speed figures: measured fastest first.
CPU_PREFERENCE = (PER_TOKEN_INT8_FILE, artifacts.STATIC_INT8_FILE)
CUDA_PREFERENCE = (artifacts.FP16_FILE, "model_O4.onnx")


def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) row-wise cosine of two [n, dim] arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return float(cos.mean()), float(cos.min())


def batch_invariance(encoder: ModelPipeline) -> float:
    """Minimum cosine between a probe's vector encoded alone and the same probe inside
    batches of other texts (a short neighbour, a long one that pads it, the whole sample,
    probe first and last). 1.0 for a batch-invariant variant; the bar is INVARIANCE_BAR."""
    worst = 1.0
    for probe in INVARIANCE_PROBES:
        alone = encoder.encode([probe])[0][None, :]
        batches = [
            [probe, "a different text"],
            [SAMPLE[20], probe],
            [probe, *SAMPLE],
            [*SAMPLE[::-1], probe, "x"],
        ]
        for batch in batches:
            vectors = encoder.encode(batch, batch_size=len(batch))
            row = batch.index(probe)
            worst = min(worst, cosine_stats(vectors[row : row + 1], alone)[1])
    return worst


def judge(kind: str, mean: float, minimum: float, invariance: float) -> tuple[bool, str]:
    """(passed, rule) for one variant: its parity bar and the batch-invariance bar."""
    stat, bar = BARS[kind]
    value = minimum if stat == "min" else mean
    rule = f"{stat} cosine >= {bar} and batch invariance >= {INVARIANCE_BAR}"
    return value >= bar and invariance >= INVARIANCE_BAR, rule


def check_variant(model_dir: Path, file: Path, reference: np.ndarray, device: str) -> dict:
    """Parity to `reference` (vectors of SAMPLE) and batch invariance of one file: a report
    row with kind, mean/min cosine, invariance, rule and `passed`."""
    kind = artifacts.variant_kind(file.name)
    encoder = onnx_pipeline(model_dir, file, device)
    try:
        mean, minimum = cosine_stats(encoder.encode(SAMPLE), reference)
        invariance = batch_invariance(encoder)
    finally:
        encoder.close()
    passed, rule = judge(kind, mean, minimum, invariance)
    return {
        "kind": kind,
        "mean_cosine": round(mean, 6),
        "min_cosine": round(minimum, 6),
        "batch_invariance": round(invariance, 7),
        "bar": rule,
        "passed": passed,
    }


# ---------------------------------------------------------------- choosing at start


@dataclass(frozen=True)
class Selection:
    file: Path
    reason: str


def _stale_names(folder: Path, fingerprint: str) -> list[str]:
    return sorted(p.name for p in folder.glob("*.onnx") if not artifacts.is_fresh(p, fingerprint))


def fresh_fp32_dir(
    model_dir: Path, transformer_dir: Path, cache_root: Path, fingerprint: str
) -> Path:
    """The folder holding a `model.onnx` exported from the current source: the model's
    onnx/, else the cache; exported (once) when neither holds one. Stale files found on
    the way are logged and left unserved."""
    own, cached = (
        model_dir / ONNX_SUBDIR,
        artifacts.cache_dir_for(model_dir, cache_root, fingerprint),
    )
    for folder in (own, cached):
        if artifacts.is_fresh(folder / FP32_FILE, fingerprint):
            return folder
    target = artifacts.export_target(model_dir, cache_root, fingerprint)
    stale = _stale_names(own, fingerprint) if own.is_dir() else []
    if stale:
        log.warning(
            "stale ONNX files in %s (not exported from the current weights, or written by an "
            "older version without a source fingerprint): %s; never served; re-exporting "
            "fp32 into %s (rebuild the other variants with: python -m training.export "
            "--model %s)",
            own, ", ".join(stale), target, model_dir,
        )  # fmt: skip
    else:
        log.info("no ONNX file for %s: exporting once into %s", model_dir, target)
    started = time.perf_counter()
    artifacts.export_fp32(transformer_dir, target, fingerprint)
    log.info("fp32 export took %.1f s", time.perf_counter() - started)
    return target


def _passing(folder: Path, fingerprint: str, names) -> list[tuple[Path, dict]]:
    rows = artifacts.report_variants(folder, fingerprint)
    found = []
    for name in names:
        row, file = rows.get(name) or {}, folder / name
        invariance = row.get("batch_invariance")  # absent in rows of older versions
        checked = row.get("passed") is True and (invariance or 0) >= INVARIANCE_BAR
        if checked and artifacts.is_fresh(file, fingerprint):
            found.append((file, row))
    return found


def _fastest(candidates: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    measured = [c for c in candidates if c[1].get("sentences_per_s_batch32")]
    if measured:
        return max(measured, key=lambda c: c[1]["sentences_per_s_batch32"])
    return candidates[0]


def build_per_token_int8(
    model_dir: Path, fp32_dir: Path, target_dir: Path, fingerprint: str
) -> dict:
    """Build `target_dir/model_qint8_pertoken.onnx` from the fp32 file, check it against
    fp32 and record its row in target_dir/report.json. Returns the row (its `passed` says
    whether to serve it)."""
    from service.int8 import quantize_per_token

    started = time.perf_counter()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / PER_TOKEN_INT8_FILE
    quantize_per_token(fp32_dir / FP32_FILE, target)
    fp32 = onnx_pipeline(model_dir, fp32_dir / FP32_FILE)
    reference = fp32.encode(SAMPLE)
    fp32.close()
    row = check_variant(model_dir, target, reference, "cpu")
    row["reference"] = FP32_FILE
    row["weight_levels"] = WEIGHT_LEVELS
    artifacts.merge_report(target_dir, {PER_TOKEN_INT8_FILE: row}, fingerprint)
    log.info(
        "built %s in %.1f s: min cosine to fp32 %.5f, batch invariance %.7f, %s",
        target, time.perf_counter() - started, row["min_cosine"], row["batch_invariance"],
        "passed" if row["passed"] else "FAILED (serving fp32)",
    )  # fmt: skip
    return row


def choose_variant(
    model_dir: Path,
    fp32_dir: Path,
    fingerprint: str,
    device: str,
    cache_root: Path | None = None,
) -> Selection:
    """`auto`: the fastest fresh variant that passed parity and invariance for `device`
    (cpu or cuda). On CPU with none there and a `cache_root`, the per-token int8 file is
    built (into the model's onnx/ when writable, else the cache) and checked first."""
    cached = artifacts.cache_dir_for(model_dir, cache_root, fingerprint) if cache_root else None
    folders = list(dict.fromkeys(f for f in (model_dir / ONNX_SUBDIR, fp32_dir, cached) if f))
    names = CUDA_PREFERENCE if device == "cuda" else CPU_PREFERENCE
    candidates = [c for folder in folders for c in _passing(folder, fingerprint, names)]
    if not candidates and device == "cpu" and cache_root is not None:
        target_dir = artifacts.export_target(model_dir, cache_root, fingerprint)
        row = artifacts.report_variants(target_dir, fingerprint).get(PER_TOKEN_INT8_FILE)
        built = row and artifacts.is_fresh(target_dir / PER_TOKEN_INT8_FILE, fingerprint)
        # a file that failed its check for these weights is not rebuilt, unless an older
        # quantiser (8-bit weights, which saturate on AVX2) built it
        built = built and row.get("weight_levels") == WEIGHT_LEVELS
        if not built:
            try:
                row = build_per_token_int8(model_dir, fp32_dir, target_dir, fingerprint)
            except Exception as exc:  # noqa: BLE001 - an old onnxruntime, an odd graph: fp32
                log.warning("per-token int8 build failed, serving fp32: %s", exc)
                row = {"passed": False, "bar": f"build failed: {exc}"}
        if row.get("passed") is True:
            candidates = [(target_dir / PER_TOKEN_INT8_FILE, row)]
        else:
            return Selection(
                fp32_dir / FP32_FILE,
                f"fp32: the per-token int8 file failed its check ({row.get('bar')}: min "
                f"cosine {row.get('min_cosine')}, invariance {row.get('batch_invariance')})",
            )
    if not candidates:
        return Selection(
            fp32_dir / FP32_FILE, f"fp32: no {'/'.join(names)} file passed parity and invariance"
        )
    file, row = _fastest(candidates)
    return Selection(
        file,
        f"auto on {device}: fastest variant that passed parity ({row['min_cosine']} min cosine) "
        f"and batch invariance ({row['batch_invariance']}) for these weights",
    )


class OnnxFileError(ValueError):
    """The asked-for ONNX file does not exist, or is stale."""


def named_variant(model_dir: Path, fp32_dir: Path, name: str, fingerprint: str) -> Selection:
    """A file asked for by name: must exist and be fresh (fp32 is re-exported when stale by
    `fresh_fp32_dir` before this runs)."""
    folders = list(dict.fromkeys([model_dir / ONNX_SUBDIR, fp32_dir]))
    if name == FP32_FILE:
        return Selection(fp32_dir / FP32_FILE, "asked for by name (onnx_file)")
    existing = [folder / name for folder in folders if (folder / name).exists()]
    if not existing:
        available = sorted({p.name for f in folders if f.is_dir() for p in f.glob("*.onnx")})
        raise OnnxFileError(
            f"ONNX file '{name}' not found in {' or '.join(map(str, folders))}; available: "
            f"{available}"
        )
    fresh = [file for file in existing if artifacts.is_fresh(file, fingerprint)]
    if not fresh:
        raise artifacts.StaleOnnxError(
            f"{existing[0]} was not exported from the current weights of {model_dir} (or has "
            f"no source fingerprint: written by an older version); rebuild it with: python -m "
            f"training.export --model {model_dir} ..., or serve onnx_file=auto"
        )
    row = artifacts.report_variants(fresh[0].parent, fingerprint).get(name, {})
    if row.get("passed") is False:
        log.warning("serving %s although it failed its check (%s)", name, row.get("bar"))
    return Selection(fresh[0], "asked for by name (onnx_file)")


def prepare_onnx(
    model_dir: Path, transformer_dir: Path, cache_root: Path, requested: str, device: str
) -> Selection:
    """The ONNX file to serve and why (see the module docstring). `device`: cpu or cuda."""
    started = time.perf_counter()
    fingerprint = artifacts.source_fingerprint(transformer_dir)
    log.info("source fingerprint %s (%.2f s)", fingerprint[:16], time.perf_counter() - started)
    fp32_dir = fresh_fp32_dir(Path(model_dir), Path(transformer_dir), Path(cache_root), fingerprint)
    if requested != "auto":
        return named_variant(Path(model_dir), fp32_dir, requested, fingerprint)
    return choose_variant(Path(model_dir), fp32_dir, fingerprint, device, Path(cache_root))


def prebuild(model_dir: Path) -> Path:
    """Export fp32 and build + check the per-token int8 file inside `model_dir/onnx`, even
    when the folder counts as read-only for the service (site-packages): for image builds,
    so that containers start without exporting. Returns the int8 file (or fp32 if it failed).
    """
    model_dir = Path(model_dir)
    from service.engine.model_spec import load_model_spec

    transformer = load_model_spec(model_dir).transformer_path
    fingerprint = artifacts.source_fingerprint(transformer)
    onnx_dir = model_dir / ONNX_SUBDIR
    if not artifacts.is_fresh(onnx_dir / FP32_FILE, fingerprint):
        artifacts.export_fp32(transformer, onnx_dir, fingerprint)
    row = build_per_token_int8(model_dir, onnx_dir, onnx_dir, fingerprint)
    return onnx_dir / (PER_TOKEN_INT8_FILE if row["passed"] else FP32_FILE)
