"""The streaming readers: every format, default ids, bad input reported where it is."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from service.bulk.readers import InputError, ReadSpec, ReadStats, read_documents
from tests.bulk.conftest import corpus, write_jsonl, write_parquet

ROWS = corpus(12)


def _read(paths, **spec):
    stats = ReadStats()
    docs = list(read_documents(paths, ReadSpec(**spec), stats))
    return docs, stats


def _write_csv(path, rows, delimiter):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "text"], delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv", "tsv"])
def test_every_format_gives_the_same_documents(tmp_path, kind):
    path = tmp_path / f"c.{kind}"
    if kind == "jsonl":
        write_jsonl(path, ROWS)
    elif kind == "parquet":
        write_parquet(path, ROWS)
    else:
        _write_csv(path, ROWS, "," if kind == "csv" else "\t")
    docs, stats = _read([path], id_field="id")
    assert [(d.doc_id, d.text) for d in docs] == [(r["id"], r["text"]) for r in ROWS]
    assert [d.record for d in docs] == list(range(1, len(ROWS) + 1))
    assert stats.documents == len(ROWS) and stats.skipped == 0
    # no --id-field: a stable id from the file name and the row number
    docs, _ = _read([path])
    assert [d.doc_id for d in docs] == [f"c.{kind}:{i}" for i in range(1, len(ROWS) + 1)]


def test_a_folder_of_text_files_ids_by_relative_path(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("First file.")
    (tmp_path / "docs" / "sub" / "b.md").write_text("# Title\n\nSecond file.")
    (tmp_path / "docs" / "ignored.bin").write_bytes(b"\x00\x01")
    docs, stats = _read([tmp_path / "docs"])
    assert [(d.doc_id, d.text) for d in docs] == [
        ("a.txt", "First file."), ("sub/b.md", "# Title\n\nSecond file.")
    ]  # fmt: skip
    assert stats.documents == 2


def test_malformed_lines_are_reported_as_file_line_skipped_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps(ROWS[0]), "{not json", json.dumps([1, 2]), json.dumps({"id": "x"}),
             json.dumps(ROWS[1])]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    docs, stats = _read([path], id_field="id")
    assert [d.doc_id for d in docs] == [ROWS[0]["id"], ROWS[1]["id"]]
    assert stats.malformed == 3
    assert stats.problems[0].startswith(f"{path}:2: ")
    assert stats.problems[1].startswith(f"{path}:3: ") and "not an object" in stats.problems[1]
    assert f"{path}:4: " in stats.problems[2] and "'text'" in stats.problems[2]
    assert docs[1].record == 5  # skipped records keep their place in the numbering
    with pytest.raises(InputError, match=rf"{path}:2: .*--strict"):
        _read([path], id_field="id", strict=True)


def test_empty_and_whitespace_texts_are_skipped_and_counted(tmp_path):
    rows = [{"id": "a", "text": ""}, {"id": "b", "text": "  \n\t"}, {"id": "c", "text": "ok"}]
    docs, stats = _read([write_jsonl(tmp_path / "c.jsonl", rows)], id_field="id")
    assert [d.doc_id for d in docs] == ["c"]
    assert stats.empty == 2 and stats.malformed == 0 and stats.records == 3


def test_undecodable_bytes_name_the_file_and_offset(tmp_path):
    path = tmp_path / "c.jsonl"
    good = (json.dumps(ROWS[0]) + "\n").encode()
    path.write_bytes(good + b'{"id": "z", "text": "caf\xe9"}\n' + good.replace(b"0000", b"0001"))
    docs, stats = _read([path], id_field="id")
    assert len(docs) == 2 and stats.malformed == 1
    offset = len(good) + len(b'{"id": "z", "text": "caf')
    assert stats.problems == [f"{path}:2: byte offset {offset}: not UTF-8 (invalid continuation "
                              "byte)"]  # fmt: skip
    text = tmp_path / "t"
    text.mkdir()
    (text / "bad.txt").write_bytes(b"line one\nline \xff two")
    _, stats = _read([text])
    assert stats.problems == [f"{text / 'bad.txt'}:2: byte offset 14: not UTF-8"]
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b"id,text\na,fine\nb,caf\xe9\nc,also fine\n")
    docs, stats = _read([csv_path], id_field="id")
    assert [d.doc_id for d in docs] == ["a", "c"]
    assert stats.problems[0].startswith(f"{csv_path}:3: byte offset 20: not UTF-8")


def test_a_missing_field_or_path_is_an_error_naming_it(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", ROWS)
    with pytest.raises(InputError, match=r"no column 'body' \(--text-field\)"):
        _read([path], text_field="body")
    with pytest.raises(InputError, match=r"no column 'key' \(--id-field\)"):
        _read([path], id_field="key")
    with pytest.raises(InputError, match="no such file"):
        _read([tmp_path / "missing.jsonl"])
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported input"):
        _read([tmp_path / "c.xlsx"])


def test_a_jsonl_file_whose_first_record_lacks_the_text_field_stops_the_run(tmp_path):
    """A wrong --text-field on JSONL is an error naming the fields there are (as a missing
    CSV or Parquet column), even without --strict; a later record without it is one bad
    line, skipped."""
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    with pytest.raises(InputError, match=rf"{path}:1: the first record has no field 'body' "
                       r"\(--text-field\); its fields: 'id', 'text'"):  # fmt: skip
        _read([path], id_field="id", text_field="body")
    later = write_jsonl(tmp_path / "d.jsonl", [ROWS[0], {"id": "x", "body": "b"}, ROWS[1]])
    docs, stats = _read([later], id_field="id")
    assert len(docs) == 2 and stats.malformed == 1


def test_a_text_that_is_not_a_string_is_a_bad_record(tmp_path):
    rows = [ROWS[0], {"id": "n", "text": 42}, {"id": 7, "text": "an id may be a number"}]
    docs, stats = _read([write_jsonl(tmp_path / "c.jsonl", rows)], id_field="id")
    assert [d.doc_id for d in docs] == [ROWS[0]["id"], "7"]
    assert stats.malformed == 1 and "text is a int, not a string" in stats.problems[0]


def test_a_csv_row_with_the_wrong_number_of_fields_is_skipped(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text\na,"one, quoted"\nb,two,extra\nc,"multi\nline"\n')
    docs, stats = _read([path], id_field="id")
    assert [(d.doc_id, d.text) for d in docs] == [("a", "one, quoted"), ("c", "multi\nline")]
    assert stats.malformed == 1 and "3: 3 fields, the header has 2" in stats.problems[0]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_reading_streams_memory_does_not_grow_with_the_corpus(tmp_path, kind):
    """Peak Python allocations while reading 20,000 rows stay within 1.5x those of 2,000
    rows (a reader that loads the file would need about 10x)."""
    peaks = []
    for n in (2_000, 20_000):
        rows = [{"id": f"d{i}", "text": f"sentence number {i} " * 8} for i in range(n)]
        path = tmp_path / f"c{n}.{kind}"
        (write_jsonl if kind == "jsonl" else write_parquet)(path, rows)
        tracemalloc.start()
        count = sum(1 for _ in read_documents([path], ReadSpec(id_field="id")))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    assert peaks[1] < 1.5 * peaks[0], peaks
