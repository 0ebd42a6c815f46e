"""The evaluators run during training measure what `training.evaluate` reports."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer

from tests.training.conftest import PAIRS
from training.data import ParallelCorpus
from training.evaluate import CachedEncoder, evaluate_mse
from training.evaluators import dev_pair_evaluators


@pytest.fixture(scope="module")
def student(bundled_model):
    """A student that is not the teacher: the bundled model with perturbed weights."""
    model = SentenceTransformer(str(bundled_model), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def test_dev_mse_is_teacher_english_against_student_translation(st_model, student):
    """The curve's dev MSE is MSE(teacher(english), student(translation)), the quantity
    the run minimises and `training.evaluate` reports, not the swapped pairing."""
    dev = ParallelCorpus(triples=[(en, de, "de") for en, de in PAIRS])
    mse_evaluator = dev_pair_evaluators(st_model, dev)[0]
    curve = -mse_evaluator(student)["dev-de_negative_mse"]
    report = evaluate_mse(CachedEncoder(student), CachedEncoder(st_model), dev.triples)["de"]
    swapped = evaluate_mse(
        CachedEncoder(student), CachedEncoder(st_model), [(de, en, "de") for en, de in PAIRS]
    )["de"]
    assert curve == pytest.approx(report, rel=1e-4)
    assert abs(swapped - report) > 1e-3 * report
