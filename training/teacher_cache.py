"""Teacher embeddings, computed once per distinct sentence and kept on disk.

The cache key covers the teacher (its path or name plus its weights' size and mtime when
local) and the exact sentence list, so a re-run or a resumed run with the same teacher and
data loads the vectors instead of encoding again, and any change recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def teacher_fingerprint(teacher_id: str) -> str:
    """The teacher's name, plus file sizes and mtimes when it is a local folder."""
    path = Path(teacher_id)
    if not path.is_dir():
        return teacher_id
    parts = [str(path.resolve())]
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in {".safetensors", ".bin", ".json"}:
            stat = file.stat()
            parts.append(f"{file.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}")
    return "|".join(parts)


def cache_key(teacher_id: str, sentences: list[str]) -> str:
    digest = hashlib.sha256(teacher_fingerprint(teacher_id).encode())
    for sentence in sentences:
        digest.update(sentence.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def teacher_embeddings(
    teacher,
    teacher_id: str,
    sentences: list[str],
    cache_dir: Path,
    batch_size: int = 128,
) -> np.ndarray:
    """float32 [len(sentences), dim] teacher vectors, read from `cache_dir` when cached."""
    cache_dir = Path(cache_dir)
    key = cache_key(teacher_id, sentences)
    vectors_file, meta_file = cache_dir / f"teacher-{key}.npy", cache_dir / f"teacher-{key}.json"
    if vectors_file.exists() and meta_file.exists():
        vectors = np.load(vectors_file)
        if vectors.shape[0] == len(sentences):
            log.info("teacher embeddings: %d loaded from cache %s", len(sentences), vectors_file)
            return vectors
        log.warning("teacher cache %s has the wrong size; recomputing", vectors_file)
    log.info("teacher embeddings: encoding %d distinct sentences", len(sentences))
    vectors = np.asarray(
        teacher.encode(
            sentences, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True
        ),
        dtype=np.float32,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = vectors_file.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(vectors_file)
    meta_file.write_text(
        json.dumps({"teacher": teacher_id, "sentences": len(sentences), "dim": vectors.shape[1]})
    )
    return vectors
