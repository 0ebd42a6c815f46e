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

This module sits above the factory (service.engine.model): it builds candidate pipelines
through it to check a new int8 file (service.parity), and never imports the served-pipeline
module (service.engine.pipeline), which calls `prepare_onnx` and then builds the pipeline.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from service import artifacts, integrity
from service.artifacts import FP32_FILE, ONNX_SUBDIR, PER_TOKEN_INT8_FILE
from service.engine.model import onnx_pipeline
from service.int8 import WEIGHT_LEVELS
from service.parity import INVARIANCE_BAR, SAMPLE, parity_row

log = logging.getLogger(__name__)

# Preference on CPU when the report has no speed figures: measured fastest first.
CPU_PREFERENCE = (PER_TOKEN_INT8_FILE, artifacts.STATIC_INT8_FILE)
CUDA_PREFERENCE = (artifacts.FP16_FILE, "model_O4.onnx")


# ---------------------------------------------------------------- choosing at start


@dataclass(frozen=True)
class Selection:
    """The ONNX file to serve, why (/info `variant_reason`), and the source fingerprint of
    the weights it was made from (/info `source_fingerprint`)."""

    file: Path
    reason: str
    fingerprint: str


def fp32_folders(model_dir: Path, cache_root: Path | None, fingerprint: str) -> list[Path]:
    """Where a fresh `model.onnx` of the model is looked for: its own onnx/, then the cache."""
    own = Path(model_dir) / ONNX_SUBDIR
    if cache_root is None:
        return [own]
    return list(dict.fromkeys([own, artifacts.cache_dir_for(model_dir, cache_root, fingerprint)]))


def fresh_fp32_dir(
    model_dir: Path, transformer_dir: Path, cache_root: Path, fingerprint: str
) -> Path:
    """The folder holding a `model.onnx` exported from the current source: the model's
    onnx/, else the cache; exported (once) when neither holds one (artifacts.fresh_fp32)."""
    target = artifacts.export_target(model_dir, cache_root, fingerprint)
    folders = fp32_folders(model_dir, cache_root, fingerprint)
    return artifacts.fresh_fp32(folders, target, transformer_dir, fingerprint).parent


def _passing(folder: Path, fingerprint: str, names) -> list[tuple[Path, dict]]:
    rows = artifacts.report_variants(folder, fingerprint)
    found = []
    for name in names:
        row, file = rows.get(name) or {}, folder / name
        invariance = row.get("batch_invariance")  # absent in rows of older versions
        checked = row.get("passed") is True and (invariance or 0) >= INVARIANCE_BAR
        if checked and artifacts.servable(file, fingerprint):
            found.append((file, row))
    return found


def _fastest(candidates: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    measured = [c for c in candidates if c[1].get("sentences_per_s_batch32")]
    if measured:
        return max(measured, key=lambda c: c[1]["sentences_per_s_batch32"])
    return candidates[0]


def check_against_fp32(model_dir: Path, fp32_file: Path, file: Path, device: str = "cpu") -> dict:
    """The report row (service.parity.parity_row) of the ONNX `file` against the vectors of
    the model's fp32 file, both run through the served pipeline."""
    fp32 = onnx_pipeline(model_dir, fp32_file, device)
    try:
        reference = fp32.encode(SAMPLE)
    finally:
        fp32.close()
    candidate = onnx_pipeline(model_dir, file, device)
    try:
        return parity_row(candidate, artifacts.variant_kind(file.name), reference)
    finally:
        candidate.close()


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
    row = {
        **check_against_fp32(model_dir, fp32_dir / FP32_FILE, target),
        "reference": FP32_FILE,
        "weight_levels": WEIGHT_LEVELS,
    }
    artifacts.merge_report(target_dir, {PER_TOKEN_INT8_FILE: row}, fingerprint)
    log.info(
        "built %s in %.1f s: min cosine to fp32 %.5f, batch invariance %.7f, %s",
        target, time.perf_counter() - started, row["min_cosine"], row["batch_invariance"],
        "passed" if row["passed"] else "FAILED (serving fp32)",
    )  # fmt: skip
    return row


def _built_row(target_dir: Path, fingerprint: str) -> dict | None:
    """The report row of a servable per-token int8 file in `target_dir` (None: none)."""
    row = artifacts.report_variants(target_dir, fingerprint).get(PER_TOKEN_INT8_FILE)
    # a file that failed its check for these weights is not rebuilt, unless an older
    # quantiser (8-bit weights, which saturate on AVX2) built it
    if row and row.get("weight_levels") != WEIGHT_LEVELS:
        return None
    if row and artifacts.servable(target_dir / PER_TOKEN_INT8_FILE, fingerprint):
        return row
    return None


def _per_token_row(model_dir: Path, fp32_dir: Path, target_dir: Path, fingerprint: str) -> dict:
    """The row of the per-token int8 file in `target_dir`, built and checked first when it is
    missing, stale or damaged (under the folder's lock: replicas starting together build it
    once). A file that failed its check for these weights is not rebuilt. A build that
    fails, or a folder that is not writable, gives a failed row (fp32 is served). Raises
    DamagedOnnxError when a damaged file cannot be rebuilt where it is."""
    row = _built_row(target_dir, fingerprint)
    if row is not None:
        return row
    file = target_dir / PER_TOKEN_INT8_FILE
    damaged = [file] if file.exists() and artifacts.is_damaged(file) else []
    try:
        artifacts.ensure_writable(target_dir, damaged)
    except artifacts.CacheNotWritableError as exc:
        log.warning("cannot build the per-token int8 file, serving fp32: %s", exc)
        return {"passed": False, "bar": f"not built: {exc}"}
    with integrity.folder_lock(target_dir):
        row = _built_row(target_dir, fingerprint)  # built by another process meanwhile
        if row is not None:
            return row
        if damaged:
            log.warning("rebuilding %s from %s", file, fp32_dir / FP32_FILE)
        try:
            return build_per_token_int8(model_dir, fp32_dir, target_dir, fingerprint)
        except Exception as exc:  # noqa: BLE001 - an old onnxruntime, an odd graph: fp32
            log.warning("per-token int8 build failed, serving fp32: %s", exc)
            return {"passed": False, "bar": f"build failed: {exc}"}


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
        row = _per_token_row(model_dir, fp32_dir, target_dir, fingerprint)
        if row.get("passed") is True:
            candidates = [(target_dir / PER_TOKEN_INT8_FILE, row)]
        else:
            return Selection(
                fp32_dir / FP32_FILE,
                f"fp32: the per-token int8 file failed its check ({row.get('bar')}: min "
                f"cosine {row.get('min_cosine')}, invariance {row.get('batch_invariance')})",
                fingerprint,
            )
    if not candidates:
        return Selection(
            fp32_dir / FP32_FILE,
            f"fp32: no {'/'.join(names)} file passed parity and invariance",
            fingerprint,
        )
    file, row = _fastest(candidates)
    return Selection(
        file,
        f"auto on {device}: fastest variant that passed parity ({row['min_cosine']} min cosine) "
        f"and batch invariance ({row['batch_invariance']}) for these weights",
        fingerprint,
    )


class OnnxFileError(ValueError):
    """The asked-for ONNX file does not exist, or is stale."""


def named_variant(model_dir: Path, fp32_dir: Path, name: str, fingerprint: str) -> Selection:
    """A file asked for by name: must exist and be fresh (fp32 is re-exported when stale by
    `fresh_fp32_dir` before this runs)."""
    folders = list(dict.fromkeys([model_dir / ONNX_SUBDIR, fp32_dir]))
    if name == FP32_FILE:
        return Selection(fp32_dir / FP32_FILE, "asked for by name (onnx_file)", fingerprint)
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
    if artifacts.is_damaged(fresh[0]):
        raise artifacts.DamagedOnnxError(
            f"{fresh[0]} is damaged (its content differs from the sha256 recorded when it was "
            f"written); rebuild it with: python -m training.export --model {model_dir} ..., "
            "or serve onnx_file=auto"
        )
    row = artifacts.report_variants(fresh[0].parent, fingerprint).get(name, {})
    if row.get("passed") is False:
        log.warning("serving %s although it failed its check (%s)", name, row.get("bar"))
    return Selection(fresh[0], "asked for by name (onnx_file)", fingerprint)


def prepare_onnx(
    model_dir: Path, transformer_dir: Path, cache_root: Path, requested: str, device: str
) -> Selection:
    """The ONNX file to serve and why (see the module docstring). `device`: cpu or cuda."""
    started = time.perf_counter()
    fingerprint = artifacts.source_fingerprint(transformer_dir)
    log.info("source fingerprint %s (%.2f s)", fingerprint[:16], time.perf_counter() - started)
    model_dir, transformer_dir, cache_root = (
        Path(model_dir),
        Path(transformer_dir),
        Path(cache_root),
    )
    try:
        fp32_dir = fresh_fp32_dir(model_dir, transformer_dir, cache_root, fingerprint)
    except artifacts.CacheNotWritableError as exc:
        cache_root = fallback_cache(cache_root, exc)
        fp32_dir = fresh_fp32_dir(model_dir, transformer_dir, cache_root, fingerprint)
    if requested != "auto":
        return named_variant(model_dir, fp32_dir, requested, fingerprint)
    return choose_variant(model_dir, fp32_dir, fingerprint, device, cache_root)


def fallback_cache(cache_root: Path, cause: Exception) -> Path:
    """A writable temporary cache, used (with a warning) when the configured one cannot be
    written and holds no export of the model (e.g. Kubernetes' readOnlyRootFilesystem).
    Raises CacheNotWritableError naming EMBED_CACHE_DIR when none is writable either."""
    fallback = Path(tempfile.gettempdir()) / "polyglot-embed-cache"
    advice = (
        "set EMBED_CACHE_DIR (--cache-dir) to a writable folder (a volume; an emptyDir in "
        "Kubernetes), or ship the ONNX files inside the model folder "
        "(service.variants.prebuild('MODEL_DIR'), as docker/Dockerfile.cpu does)"
    )
    try:
        artifacts.ensure_writable(fallback)
    except artifacts.CacheNotWritableError as again:
        raise artifacts.CacheNotWritableError(
            f"the ONNX export cache EMBED_CACHE_DIR={cache_root} is not writable ({cause}) and "
            f"holds no export of this model, nor is the temporary folder writable ({again}): "
            f"{advice}"
        ) from None
    log.warning(
        "the ONNX export cache EMBED_CACHE_DIR=%s is not writable (%s) and holds no export of "
        "this model: exporting into the temporary folder %s instead (redone on every start "
        "of a fresh container); to avoid that, %s",
        cache_root, cause, fallback, advice,
    )  # fmt: skip
    return fallback


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
    artifacts.fresh_fp32([onnx_dir], onnx_dir, transformer, fingerprint)
    row = build_per_token_int8(model_dir, onnx_dir, onnx_dir, fingerprint)
    return onnx_dir / (PER_TOKEN_INT8_FILE if row["passed"] else FP32_FILE)
