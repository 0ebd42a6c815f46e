"""The ONNX artefact contract shared by `service/` and `training/`: file names, variant kinds,
the source fingerprint, the export report, and the fp32 export with its one freshness check
(`fresh_fp32`, used by the service's start and by `python -m training.export`).

An ONNX file is trusted only when it says what it was made from. Every file this project
writes carries, in its ONNX metadata (`metadata_props`), the key `polyglot_embed.source`:
the fingerprint of the transformer folder it was exported from. The fingerprint is a
sha256 over the name, size and full sha256 of each source file (weights, config,
tokenizer files; see SOURCE_PATTERNS). Full hashing is cheap enough to run on every start
(`python -m benchmarks.fingerprint_cost`, 2-core CPU VM, no GPU, load average ≈ 4 from
other jobs): 0.05 s for the bundled all-MiniLM-L6-v2 (87 MB), 0.26 s for a 470 MB weight
file. A sampled hash was not used: a change to one weight matrix must change it. A file whose
fingerprint differs from the folder's, or that has none (written by an older version), is
stale: it is never served. A file whose content differs from the sha256 recorded beside it
when it was written (service.integrity) is damaged: never served either, rebuilt when it
can be (`fresh_fp32`, service.variants), else the start stops (`ArtefactError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from service import integrity

log = logging.getLogger(__name__)

ONNX_SUBDIR = "onnx"
FP32_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
PER_TOKEN_INT8_FILE = "model_qint8_pertoken.onnx"
STATIC_INT8_FILE = "model_qint8_static.onnx"
REPORT_FILE = "report.json"
FINGERPRINT_KEY = "polyglot_embed.source"
# Files of a transformer folder that determine its ONNX export (and the tokens fed to it).
SOURCE_PATTERNS = (
    "*.safetensors",
    "pytorch_model*.bin",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "*.model",
    "merges.txt",
    "sentence_bert_config.json",
)


class ArtefactError(RuntimeError):
    """A model file the service cannot serve and cannot rebuild: the start stops with this
    one-line message (it names the file or setting, and what to do)."""


class StaleOnnxError(ArtefactError):
    """An ONNX file was not exported from the model folder's current weights."""


class DamagedOnnxError(ArtefactError):
    """An ONNX file's content differs from the hash recorded when it was written, and it
    cannot be rebuilt where it is."""


class CacheNotWritableError(ArtefactError):
    """A file must be written (exported or built), and its folder is not writable."""


def transformer_dir(model_dir: Path) -> Path:
    """The folder of the Transformer module inside a sentence-transformers model folder."""
    model_dir = Path(model_dir)
    modules_file = model_dir / "modules.json"
    if modules_file.exists():
        for module in json.loads(modules_file.read_text()):
            if module["type"].endswith("Transformer"):
                return model_dir / module["path"]
    return model_dir


# ---------------------------------------------------------------- variant kinds


def variant_kind(file_name: str) -> str:
    """`int8`, `fp16` or `fp32` (model.onnx and O1-O3 keep fp32 precision)."""
    if "int8" in file_name or "quantized" in file_name:
        return "int8"
    if "fp16" in file_name or "O4" in file_name:
        return "fp16"
    return "fp32"


def dtype_of(file_name: str) -> str:
    """The compute dtype a variant reports in /info: float32, float16 or int8."""
    return {"int8": "int8", "fp16": "float16", "fp32": "float32"}[variant_kind(file_name)]


# ---------------------------------------------------------------- the source fingerprint


def source_files(transformer_dir: Path) -> list[Path]:
    """The files of `transformer_dir` the fingerprint covers (sorted, no duplicates)."""
    found = {p for pattern in SOURCE_PATTERNS for p in Path(transformer_dir).glob(pattern)}
    return sorted(p for p in found if p.is_file())


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def source_fingerprint(transformer_dir: Path) -> str:
    """sha256 hex over (name, size, sha256 of content) of every source file.

    Raises FileNotFoundError when the folder has no weight file."""
    files = source_files(transformer_dir)
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise FileNotFoundError(f"no weight file (*.safetensors, *.bin) in {transformer_dir}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _varint(handle) -> int | None:
    """A protobuf varint read from `handle` (None at end of file)."""
    value, shift = 0, 0
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


def _metadata_props(onnx_file: Path) -> dict[str, str]:
    """ModelProto.metadata_props (field 14) read by skipping over the other top-level fields
    with seeks, so the graph and its weights are never parsed or held in memory."""
    from onnx import StringStringEntryProto

    props = {}
    with Path(onnx_file).open("rb") as handle:
        while (key := _varint(handle)) is not None:
            field, wire = key >> 3, key & 7
            if wire == 0:
                _varint(handle)
            elif wire in (1, 5):
                handle.seek(8 if wire == 1 else 4, 1)
            elif wire == 2:
                size = _varint(handle)
                if field != 14:
                    handle.seek(size, 1)
                    continue
                entry = StringStringEntryProto.FromString(handle.read(size))
                props[entry.key] = entry.value
            else:
                raise ValueError(f"{onnx_file}: not an ONNX file (wire type {wire})")
    return props


def read_fingerprint(onnx_file: Path) -> str | None:
    """The source fingerprint recorded in an ONNX file (None: none recorded, or unreadable).
    Reads only the file's metadata (cheap even for a multi-GB file)."""
    try:
        return _metadata_props(onnx_file).get(FINGERPRINT_KEY)
    except Exception as exc:  # noqa: BLE001 - a corrupt file is simply not trusted
        log.warning("cannot read %s: %s", onnx_file, exc)
        return None


def set_fingerprint(model, fingerprint: str) -> None:
    """Record `fingerprint` in an in-memory onnx.ModelProto (replacing any earlier one)."""
    kept = [p for p in model.metadata_props if p.key != FINGERPRINT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = FINGERPRINT_KEY, fingerprint


def stamp_file(onnx_file: Path, fingerprint: str) -> None:
    """Record `fingerprint` in an ONNX file on disk (weights kept where they are), and its
    new content hash beside it (service.integrity)."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    set_fingerprint(model, fingerprint)
    with integrity.atomic_path(onnx_file) as partial:
        onnx.save(model, str(partial))
    integrity.record_hash(onnx_file)


def is_fresh(onnx_file: Path, fingerprint: str) -> bool:
    """True when the file exists and records exactly `fingerprint`."""
    return onnx_file.exists() and read_fingerprint(onnx_file) == fingerprint


_warned: set[tuple] = set()  # damaged files already named in a warning (path, size, mtime)


def is_damaged(onnx_file: Path) -> bool:
    """True when the file exists and its content differs from the hash recorded when it
    was written (named in a warning, once per version of the file)."""
    onnx_file = Path(onnx_file)
    if not onnx_file.exists() or integrity.check(onnx_file) is not integrity.Integrity.DAMAGED:
        return False
    stat = onnx_file.stat()
    key = (str(onnx_file), stat.st_size, stat.st_mtime_ns)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "damaged ONNX file %s: its content differs from the sha256 recorded when it was "
            "written (%s); never served (a file replaced on purpose: delete its %s)",
            onnx_file, integrity.hash_path(onnx_file).name, integrity.HASH_SUFFIX,
        )  # fmt: skip
    return True


def servable(onnx_file: Path, fingerprint: str) -> bool:
    """Exists, was exported from `fingerprint` and is not damaged (service.integrity). A
    fresh file without a recorded hash (written by an older version) gets one now, when
    its folder is writable."""
    onnx_file = Path(onnx_file)
    if not (is_fresh(onnx_file, fingerprint) and not is_damaged(onnx_file)):
        return False
    unrecorded = integrity.check(onnx_file) is integrity.Integrity.UNRECORDED
    if unrecorded and folder_is_writable(onnx_file.parent):
        try:
            integrity.record_hash(onnx_file)
            log.info("recorded the content hash of %s (written by an older version)", onnx_file)
        except OSError as exc:
            log.info("cannot record the content hash of %s: %s", onnx_file, exc)
    return True


# ---------------------------------------------------------------- where files live


def folder_is_writable(folder: Path) -> bool:
    """Writable, and not an installed package (site-packages is treated as read-only)."""
    resolved = str(Path(folder).resolve())
    if "site-packages" in resolved or "dist-packages" in resolved:
        return False
    return os.access(folder, os.W_OK)


def cache_dir_for(model_dir: Path, cache_root: Path, fingerprint: str) -> Path:
    """The export cache folder of a read-only model: keyed by the folder's name and the
    source fingerprint (content, not mtimes), so changed weights get a new folder."""
    return Path(cache_root) / ONNX_SUBDIR / f"{Path(model_dir).name}-{fingerprint[:16]}"


def export_target(model_dir: Path, cache_root: Path, fingerprint: str) -> Path:
    """Where new ONNX files of this model go: its own onnx/ when writable, else the cache."""
    if folder_is_writable(model_dir):
        return Path(model_dir) / ONNX_SUBDIR
    return cache_dir_for(model_dir, cache_root, fingerprint)


# ---------------------------------------------------------------- the export report


def read_report(onnx_dir: Path) -> dict:
    """`onnx_dir/report.json` as a dict ({} when absent or unreadable)."""
    path = Path(onnx_dir) / REPORT_FILE
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable %s", path)
        return {}
    return report if isinstance(report, dict) else {}


def report_variants(onnx_dir: Path, fingerprint: str) -> dict[str, dict]:
    """The report's per-variant rows that were measured on files of `fingerprint`
    (rows of other or unknown sources are dropped: their verdicts say nothing now)."""
    variants = read_report(onnx_dir).get("variants", {})
    if not isinstance(variants, dict):
        return {}
    return {
        name: row
        for name, row in variants.items()
        if isinstance(row, dict) and row.get("source_fingerprint") == fingerprint
    }


def merge_report(onnx_dir: Path, rows: dict[str, dict], fingerprint: str, **header) -> Path:
    """Write `rows` (each stamped with `fingerprint`) into report.json, keeping earlier rows
    of the same fingerprint and dropping stale ones."""
    path = Path(onnx_dir) / REPORT_FILE
    variants = report_variants(onnx_dir, fingerprint)
    variants.update(
        {name: {**row, "source_fingerprint": fingerprint} for name, row in rows.items()}
    )
    report = {**read_report(onnx_dir), **header, "source_fingerprint": fingerprint}
    report["variants"] = variants
    integrity.write_text_atomic(path, json.dumps(report, indent=2))
    return path


# ---------------------------------------------------------------- the fp32 export


def export_transformer_fp32(
    transformer_dir: Path, target_dir: Path, fingerprint: str | None = None
) -> Path:
    """Export the transformer to `target_dir/model.onnx` with optimum (inputs input_ids,
    attention_mask[, token_type_ids]; output last_hidden_state [batch, seq, hidden]) and
    record the source fingerprint in it. Replaces any file already there."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction

    fingerprint = fingerprint or source_fingerprint(transformer_dir)
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    # a unique folder beside the target: same file system (renames are atomic), and
    # replicas exporting into one folder never share a temporary file
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".export-") as tmp:
        ort_model = ORTModelForFeatureExtraction.from_pretrained(
            str(transformer_dir), export=True, provider="CPUExecutionProvider"
        )
        ort_model.save_pretrained(tmp)
        stamp_file(Path(tmp) / FP32_FILE, fingerprint)
        data = Path(tmp) / (FP32_FILE + "_data")
        if data.exists():  # models over 2 GB keep their weights beside the graph
            os.replace(data, target_dir / data.name)
        # the hash first: a reader that sees the new file sees its hash
        os.replace(
            integrity.hash_path(Path(tmp) / FP32_FILE), integrity.hash_path(target_dir / FP32_FILE)
        )
        os.replace(Path(tmp) / FP32_FILE, target_dir / FP32_FILE)
    log.info("exported %s", target_dir / FP32_FILE)
    return target_dir / FP32_FILE


def stale_names(folder: Path, fingerprint: str) -> list[str]:
    """Names of the ONNX files in `folder` not exported from the source `fingerprint`."""
    if not Path(folder).is_dir():
        return []
    return sorted(p.name for p in Path(folder).glob("*.onnx") if not is_fresh(p, fingerprint))


def ensure_writable(folder: Path, damaged: list[Path] | None = None) -> None:
    """Create `folder` if needed and prove a file can be written into it. Raises
    DamagedOnnxError naming the first of `damaged` (files that were to be rebuilt there)
    when it cannot, else CacheNotWritableError."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if damaged:
            raise DamagedOnnxError(
                f"{damaged[0]} is damaged (its content differs from the sha256 recorded when "
                f"it was written) and cannot be rebuilt: {folder} is not writable ({reason}); "
                "replace it from a good copy, or make the folder writable, then restart"
            ) from None
        raise CacheNotWritableError(f"cannot write into {folder} ({reason})") from None


def _servable_fp32(folders: list[Path], fingerprint: str) -> Path | None:
    return next(
        (Path(f) / FP32_FILE for f in folders if servable(Path(f) / FP32_FILE, fingerprint)),
        None,
    )


def fresh_fp32(
    folders: list[Path], target_dir: Path, transformer_dir: Path, fingerprint: str
) -> Path:
    """The one fp32 freshness check: the first `folder/model.onnx` among `folders` exported
    from the current source (`fingerprint`) and not damaged (its content hash, checked);
    when none holds one, `model.onnx` is exported (once, under `target_dir`'s lock: a
    replica starting at the same time waits and then finds it) into `target_dir`, with a
    warning naming the stale or damaged files found in `folders` (never served). Returns
    the fp32 file. Raises DamagedOnnxError / CacheNotWritableError when `target_dir` is
    not writable."""
    found = _servable_fp32(folders, fingerprint)
    if found is not None:
        return found
    candidates = [Path(f) / FP32_FILE for f in folders]
    damaged = [f for f in candidates if is_damaged(f)]
    ensure_writable(target_dir, damaged)
    with integrity.folder_lock(target_dir):
        found = _servable_fp32(folders, fingerprint)  # exported by another process meanwhile
        if found is not None:
            return found
        stale = {str(folder): stale_names(folder, fingerprint) for folder in folders}
        stale = {folder: names for folder, names in stale.items() if names}
        if stale:
            log.warning(
                "stale ONNX files (not exported from the current weights, or written by an "
                "older version without a source fingerprint): %s; never served; re-exporting "
                "fp32 into %s (rebuild the other variants with: python -m training.export "
                "--model <folder>)",
                "; ".join(f"in {folder}: {', '.join(names)}" for folder, names in stale.items()),
                target_dir,
            )
        elif damaged:
            log.warning("rebuilding %s from the source weights", ", ".join(map(str, damaged)))
        else:
            log.info("no ONNX file from the current weights: exporting once into %s", target_dir)
        started = time.perf_counter()
        file = export_transformer_fp32(transformer_dir, target_dir, fingerprint)
        log.info("fp32 export took %.1f s", time.perf_counter() - started)
        return file
