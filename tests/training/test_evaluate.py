"""Metrics on hand-made cases, and the evaluation on real data when it is there."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import markdown_table
from training.metrics import cosine_rows, mse_x100, retrieval_accuracy, spearman_x100
from training.scores import CachedEncoder, evaluate_model


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
    from training.scores import EvaluationResult

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


# ---------------------------------------------------------------- named parallel sets


def test_retrieval_accuracy_with_gold_indices():
    eye = np.eye(3)
    # two queries are translations of candidate 0, one of candidate 2
    queries = np.array([[1.0, 0.1, 0.0], [0.9, 0.0, 0.2], [0.0, 0.1, 1.0]])
    assert retrieval_accuracy(queries, eye, np.array([0, 0, 2])) == 100.0
    assert retrieval_accuracy(queries, eye) == pytest.approx(200 / 3)  # aligned: query 1 wrong


def test_parse_parallel_dev_names():
    from pathlib import Path

    from training.testsets import parse_parallel_dev

    assert parse_parallel_dev("docs=corpus/cpu-recipe") == ("docs", Path("corpus/cpu-recipe"))
    assert parse_parallel_dev("corpus/cpu-recipe") == ("cpu-recipe", Path("corpus/cpu-recipe"))
    assert parse_parallel_dev("corpus/cpu-recipe/dev")[0] == "cpu-recipe"
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_parallel_dev("docs=")


def _corpus_folder(root, dev_rows, train_rows=(("Train only sentence here.", "Nur Training."),)):
    import gzip

    for split, rows in (("dev", dev_rows), ("train", train_rows)):
        if rows is None:
            continue
        (root / split).mkdir(parents=True)
        with gzip.open(root / split / "corpus.en-de.tsv.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(f"{en}\t{xx}\n" for en, xx in rows)
    return root


def test_load_parallel_dev_reads_the_dev_split_only(tmp_path):
    from training.data import DataError
    from training.testsets import load_parallel_dev

    rows = [("Open the file menu.", "Öffnen Sie das Menü Datei."), ("Save it.", "Speichern.")]
    corpus = _corpus_folder(tmp_path / "corpus", rows)
    triples = load_parallel_dev(corpus, ["de", "fr"])  # no French: skipped, not an error
    assert triples == [(en, xx, "de") for en, xx in rows]
    assert load_parallel_dev(corpus / "dev", ["de"]) == triples  # the dev folder itself
    assert load_parallel_dev(corpus / "dev" / "corpus.en-de.tsv.gz", ["de"]) == triples
    train_only = _corpus_folder(tmp_path / "train-only", None)
    with pytest.raises(DataError, match="no dev/"):
        load_parallel_dev(train_only, ["de"])
    with pytest.raises(DataError):
        load_parallel_dev(corpus, ["fr"])


class _TableEncoder:
    """A fake model: fixed vectors per sentence (unit axes of R^4, or their mix)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def encode(self, sentences, **_):
        return np.array([self.table[s] for s in sentences], dtype=np.float32)


def test_parallel_set_retrieval_both_spaces_and_mse():
    from training.scores import evaluate_parallel_set

    model = _TableEncoder({
        "One.": [1, 0, 0, 0], "Two.": [0, 1, 0, 0], "Three.": [0, 0, 1, 0],
        "Eins.": [1, 0.1, 0, 0], "Uno.": [0.9, 0, 0.1, 0],  # two translations of "One."
        "Zwei.": [0, 0, 1, 0],  # the model confuses "Zwei." with "Three."
        "Drei.": [0, 0, 0.9, 0],
    })  # fmt: skip
    teacher = _TableEncoder({"One.": [1, 0, 0, 0], "Two.": [0, 1, 0, 0], "Three.": [0, 0, 1, 0]})
    triples = [("One.", "Eins.", "de"), ("One.", "Uno.", "de"), ("Two.", "Zwei.", "de"),
               ("Three.", "Drei.", "de"), ("One.", "Uno.", "es")]  # fmt: skip
    same, cross, mse = evaluate_parallel_set(
        "docs", CachedEncoder(model), triples, CachedEncoder(teacher)
    )
    assert same == {"docs:deu->eng": 75.0, "docs:spa->eng": 100.0}
    assert cross == same  # the teacher's English vectors equal the model's here
    queries = model.encode(["Eins.", "Uno.", "Zwei.", "Drei."])
    expected_de = np.mean((queries - teacher.encode(["One.", "One.", "Two.", "Three."])) ** 2) * 100
    assert mse["docs:de"] == pytest.approx(expected_de)
    no_teacher = evaluate_parallel_set("docs", CachedEncoder(model), triples)
    assert no_teacher[0] == same and no_teacher[1] == {} and no_teacher[2] == {}


def test_parallel_dev_cli_on_the_bundled_model(tmp_path, bundled_model, capsys):
    import json

    from tests.training.conftest import PAIRS
    from training.evaluate import main

    corpus = _corpus_folder(tmp_path / "corpus", PAIRS[:8])
    output = tmp_path / "eval.json"
    main([
        "--model", str(bundled_model), "--teacher", str(bundled_model), "--languages", "de",
        "--parallel-dev", f"docs={corpus}", "--parallel-dev-only", "--output", str(output),
    ])  # fmt: skip
    result = json.loads(output.read_text())
    assert result["sts"] == {} and result["tatoeba"] == {}  # --parallel-dev-only
    same = result["parallel_retrieval"]["docs:deu->eng"]
    assert 0 <= same <= 100
    assert result["parallel_retrieval_cross_space"]["docs:deu->eng"] == same  # teacher = model
    assert result["parallel_mse"]["docs:de"] > 0  # German vs English text, not the same vector
    table = capsys.readouterr().out
    assert "| docs retrieval deu->eng |" in table
    assert "| docs retrieval model(deu)->teacher(eng) |" in table
    assert f"| docs MSE x100 de | {result['parallel_mse']['docs:de']:.3f} |" in table
