"""The evaluators run during training measure what `training.evaluate` reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tests.training.conftest import PAIRS
from training.data import ParallelCorpus
from training.evaluators import StsDev, dev_pair_evaluators
from training.metrics import retrieval_accuracy, sts_spearman
from training.scores import CachedEncoder, evaluate_mse


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


def test_retrieval_and_sts_curves_are_the_report_metrics(st_model, student, tmp_path):
    """The learning curve's retrieval and STS figures are `training.metrics`' (in
    sentence-transformers' units: fractions and correlations)."""
    english, german = [en for en, _ in PAIRS], [de for _, de in PAIRS]
    dev = ParallelCorpus(triples=[(en, de, "de") for en, de in PAIRS])
    curve = dev_pair_evaluators(st_model, dev)[1](student)
    en, de = student.encode(english), student.encode(german)
    assert curve["dev-de_src2trg_accuracy"] == pytest.approx(retrieval_accuracy(en, de) / 100)
    assert curve["dev-de_trg2src_accuracy"] == pytest.approx(retrieval_accuracy(de, en) / 100)
    gold = np.arange(len(PAIRS)) % 5
    sts = StsDev(english, german, gold, name="sts")(student)
    assert sts["sts_spearman_cosine"] == pytest.approx(sts_spearman(en, de, gold) / 100, abs=1e-6)
