"""Metrics on hand-made cases, and the evaluation on real data when it is there."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import (
    cosine_rows,
    evaluate_model,
    markdown_table,
    mse_x100,
    retrieval_accuracy,
    spearman_x100,
)


def test_spearman_on_hand_made_ranks():
    assert spearman_x100(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(100)
    assert spearman_x100(np.array([4, 3, 2, 1]), np.array([1, 2, 3, 4])) == pytest.approx(-100)
    assert spearman_x100(np.array([1, 3, 2, 4]), np.array([1, 2, 3, 4])) == pytest.approx(80)


def test_retrieval_accuracy_on_hand_made_vectors():
    eye = np.eye(4)
    assert retrieval_accuracy(eye, eye) == 100.0
    assert retrieval_accuracy(eye, eye[[1, 0, 2, 3]]) == 50.0
    noisy = eye + 0.1
    assert retrieval_accuracy(noisy, eye) == 100.0


def test_cosine_rows_and_mse():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0]])
    assert np.allclose(cosine_rows(a, b), [1.0, 0.0])
    assert mse_x100(np.zeros((2, 2)), np.ones((2, 2))) == 100.0


@pytest.mark.data
def test_teacher_evaluation_on_shared_data(st_model, data_dir):
    result = evaluate_model(st_model, data_dir, ["de"], teacher=st_model, limit=400)
    assert 70 < result.sts["en-en"] < 95  # all-MiniLM-L6-v2 on the full test split: 82.0
    assert result.sts["en-de"] < result.sts["en-en"] - 20  # an English-only teacher
    assert "deu->eng" in result.tatoeba and "deu->eng" in result.tatoeba_cross_space
    assert "STS en-en" in markdown_table({"teacher": result})


def test_markdown_table_with_every_group():
    from training.evaluate import EvaluationResult

    full = EvaluationResult(sts={"en-en": 80.0, "en-de": 70.0}, sts_cross_space={"en-de": 60.0},
                            tatoeba={"deu->eng": 90.0}, tatoeba_cross_space={"deu->eng": 85.0},
                            mse={"de": 0.123})  # fmt: skip
    table = markdown_table({"teacher": EvaluationResult(sts={"en-en": 82.0}), "student": full})
    assert "| STS en-en | 82.0 | 80.0 |" in table
    assert "| STS teacher(en)-model(de) |  | 60.0 |" in table
    assert "| MSE x100 de |  | 0.123 |" in table
    assert "Tatoeba model(deu)->teacher(eng)" in table


@pytest.mark.data
def test_a_language_one_set_lacks_is_skipped_in_that_set_only(st_model, data_dir):
    # stsb-multi-mt has no Turkish; Tatoeba has: a long run must not crash at the end
    result = evaluate_model(st_model, data_dir, ["tr"], limit=50)
    assert "en-tr" not in result.sts and "en-en" in result.sts
    assert "tur->eng" in result.tatoeba
