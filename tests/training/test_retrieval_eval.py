"""training.retrieval_eval: the metrics by hand, the sets from the shared data, and the
evaluation through the bulk job's real index (LanceDB, and pgvector giving the same
figures), on the bundled model."""

from __future__ import annotations

import json
import math

import pytest

from tests.bulk.pg_server import pg_dsn  # noqa: F401
from training.retrieval_eval import (
    Model,
    ParallelSet,
    Query,
    evaluate_set,
    main,
    markdown_table,
    rank_metrics,
    setups,
    stsb_set,
    tatoeba_set,
)

ENGLISH = [
    "The cat sleeps on the sofa.",
    "A man is playing the guitar.",
    "The train to Berlin is late.",
    "She drinks coffee every morning.",
    "The children are swimming in the lake.",
    "Stock markets fell sharply today.",
]
GERMAN = [
    "Die Katze schläft auf dem Sofa.",
    "Ein Mann spielt Gitarre.",
    "Der Zug nach Berlin hat Verspätung.",
    "Sie trinkt jeden Morgen Kaffee.",
    "Die Kinder schwimmen im See.",
    "Die Aktienmärkte sind heute stark gefallen.",
]


def tiny_set() -> ParallelSet:
    """English queries (each finds itself) and German ones against the English side."""
    result = ParallelSet("tiny")
    ids = [result.doc_id(text) for text in ENGLISH]
    result.queries["en"] = [Query(text, doc) for text, doc in zip(ENGLISH, ids)]
    result.queries["de"] = [Query(text, doc) for text, doc in zip(GERMAN, ids)]
    return result


def test_rank_metrics_by_hand():
    query = Query("q", "b")
    assert rank_metrics(["b", "a"], query) == {"recall@1": 1.0, "recall@10": 1.0, "mrr@10": 1.0}
    assert rank_metrics(["a", "c", "b"], query) == {
        "recall@1": 0.0,
        "recall@10": 1.0,
        "mrr@10": pytest.approx(1 / 3),
    }
    missed = rank_metrics([f"x{i}" for i in range(10)] + ["b"], query)
    assert missed == {"recall@1": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    graded = Query("q", "b", {"b": 5.0, "c": 3.0})
    # DCG = 3/log2(2) + 5/log2(3); ideal = 5/log2(2) + 3/log2(3)
    expected = (3 + 5 / math.log2(3)) / (5 + 3 / math.log2(3))
    assert rank_metrics(["c", "b", "a"], graded)["ndcg@10"] == pytest.approx(expected)
    assert rank_metrics(["b", "c"], graded)["ndcg@10"] == pytest.approx(1.0)


def test_setups_pair_every_student_with_the_teachers_index():
    teacher, s1, s2 = Model("teacher", "t"), Model("s1", "a"), Model("s2", "b")
    assert setups([teacher, s1, s2]) == [
        (teacher, teacher),
        (s1, s1),
        (s2, s2),
        (teacher, s1),
        (teacher, s2),
    ]


@pytest.mark.data
def test_sets_from_the_shared_data(data_dir):
    tatoeba = tatoeba_set(data_dir, ["de", "fr"], 50)
    assert [len(tatoeba.queries[lang]) for lang in ("de", "fr")] == [50, 50]
    assert 50 < len(tatoeba.documents) <= 100  # the union of two English sides
    first = tatoeba.queries["de"][0]
    assert tatoeba.documents[first.relevant] == (data_dir / "tatoeba/tatoeba.deu-eng.eng").open(
        encoding="utf-8"
    ).readline().rstrip("\n")

    stsb = stsb_set(data_dir, ["de"], 20)
    queries = stsb.queries["de"]
    assert len(queries) == 40 and len(stsb.documents) <= 40
    # each query's source graded 5, its STS partner graded by the gold score
    assert all(q.grades[q.relevant] == 5.0 and len(q.grades) in (1, 2) for q in queries)
    assert {len(q.grades) for q in queries} == {2}


def test_evaluation_through_the_bulk_jobs_index(bundled_model, cache_dir, tmp_path):
    settings = {"cache_dir": str(cache_dir), "onnx_file": "model.onnx"}
    teacher = Model("teacher", str(bundled_model))
    same = Model("same-as-teacher", str(bundled_model))
    rows = evaluate_set(tiny_set(), [teacher, same], tmp_path, "lancedb", settings)
    by_setup = {(r.index_model, r.query_model, r.language): r for r in rows}
    assert len(rows) == 6  # (teacher, teacher), (same, same), (teacher, same) x en, de
    # an English sentence finds itself in the English index
    assert by_setup["teacher", "teacher", "en"].metrics["recall@1"] == 100.0
    assert by_setup["teacher", "teacher", "en"].documents == len(ENGLISH)
    assert {(r.index_variant, r.query_variant) for r in rows} == {("model.onnx", "model.onnx")}
    # the same model on the teacher's index: (a) equals (b) exactly
    for lang in ("en", "de"):
        assert by_setup["teacher", "same-as-teacher", lang].metrics == pytest.approx(
            by_setup["teacher", "teacher", lang].metrics
        )
    de = by_setup["teacher", "teacher", "de"].metrics
    assert 0 <= de["recall@1"] <= de["recall@10"] == 100.0  # 6 documents: all in the top 10
    table = markdown_table(rows)
    assert "| tiny | teacher | same-as-teacher | de | 6 | 6 |" in table and "**mean**" in table


def test_pgvector_index_gives_the_same_figures(pg_dsn, bundled_model, cache_dir, tmp_path):  # noqa: F811
    settings = {"cache_dir": str(cache_dir), "onnx_file": "model.onnx"}
    models = [Model("teacher", str(bundled_model))]
    lance = evaluate_set(tiny_set(), models, tmp_path / "l", "lancedb", settings)
    pg = evaluate_set(tiny_set(), models, tmp_path / "p", pg_dsn, settings)
    assert len(pg) == len(lance) == 2
    for a, b in zip(pg, lance):
        assert (a.language, a.metrics) == (b.language, pytest.approx(b.metrics))


@pytest.mark.data
def test_cli_on_a_slice_of_the_shared_data(data_dir, cache_dir, tmp_path, capsys):
    output = tmp_path / "retrieval.json"
    code = main([
        "--data", str(data_dir), "--languages", "de", "--sets", "tatoeba,stsb", "--limit", "8",
        "--onnx-file", "model.onnx", "--cache-dir", str(cache_dir),
        "--work-dir", str(tmp_path / "work"), "--output", str(output),
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "| tatoeba | teacher | teacher | de | 8 |" in table
    assert "embedded by: teacher model.onnx" in table
    rows = json.loads(output.read_text())["rows"]
    assert {(r["set"], r["language"]) for r in rows} == {("tatoeba", "de"), ("stsb", "de")}
    for row in rows:
        assert all(0.0 <= v <= 100.0 for v in row["metrics"].values())
        assert ("ndcg@10" in row["metrics"]) == (row["set"] == "stsb")


def test_cli_refuses_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["--data", str(tmp_path), "--sets", "imdb"])
    assert refused.value.code == 2
    assert "--sets: unknown imdb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--limit", "0"])
    assert "--limit must be at least 1" in capsys.readouterr().err
