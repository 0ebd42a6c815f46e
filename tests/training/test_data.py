"""Parallel-data readers: every format, malformed lines reported with file:line."""

from __future__ import annotations

import gzip

import pytest

from training.data import DataError, read_parallel, read_parallel_tsv, read_sources


def test_tsv_reader_keeps_good_lines_and_reports_bad_ones(tmp_path):
    path = tmp_path / "talks-en-de.tsv"
    path.write_bytes(
        b"Hello world\tHallo Welt\n"
        b"only one column\n"
        b"\tleer\n"
        b"Good night\tGute Nacht\tBonne nuit\n" + b"bad bytes \xff\xfe\tkaputt\n"
    )
    corpus = read_parallel_tsv(path)
    assert corpus.triples == [
        ("Hello world", "Hallo Welt", "de"),
        ("Good night", "Gute Nacht", "de"),
        ("Good night", "Bonne nuit", "de"),
    ]
    assert corpus.skipped == 3
    assert corpus.problems[0].startswith(f"{path}:2: expected english<TAB>translation")
    assert corpus.problems[1] == f"{path}:3: empty sentence"
    assert corpus.problems[2].startswith(f"{path}:5: not valid UTF-8")


def test_gzipped_tsv(tmp_path):
    path = tmp_path / "parallel.en-es.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("The cat\tEl gato\n")
    assert read_parallel(path, []).triples == [("The cat", "El gato", "es")]


def _stsb(tmp_path, langs, rows=2):
    folder = tmp_path / "stsb-multi-mt"
    folder.mkdir()
    text = {
        "en": ["A dog runs.", "A cat sleeps."],
        "de": ["Ein Hund rennt.", "Eine Katze schläft."],
    }
    for lang in langs:
        lines = [f'"{text[lang][0]} {i}","{text[lang][1]} {i}",3.0' for i in range(rows)]
        (folder / f"stsb-{lang}-train.csv").write_text("\n".join(lines) + "\n")
        (folder / f"stsb-{lang}-dev.csv").write_text(lines[0] + "\n")
    return tmp_path


def test_stsb_folder_pairs_aligned_rows(tmp_path):
    root = _stsb(tmp_path, ["en", "de"])
    corpus = read_parallel(root, ["en", "de"])
    assert ("A dog runs. 0", "Ein Hund rennt. 0", "de") in corpus.triples
    assert ("A cat sleeps. 1", "A cat sleeps. 1", "en") in corpus.triples
    assert corpus.languages() == {"en": 4, "de": 4}
    samples = corpus.training_samples()
    assert ("Ein Hund rennt. 0", "A dog runs. 0") in samples
    assert ("A dog runs. 0", "A dog runs. 0") in samples
    assert len(samples) == len(set(samples))
    dev = read_parallel(root, ["de"], split="dev")
    assert len(dev.triples) == 2


def test_unknown_language_fails_before_training(tmp_path):
    root = _stsb(tmp_path, ["en", "de"])
    with pytest.raises(DataError, match=r"unknown language\(s\) xx.*available: de, en"):
        read_parallel(root, ["de", "xx"])


def test_misaligned_files_fail(tmp_path):
    root = _stsb(tmp_path, ["en", "de"])
    (root / "stsb-multi-mt" / "stsb-de-train.csv").write_text('"x","y",1\n')
    with pytest.raises(DataError, match="not aligned"):
        read_parallel(root, ["de"])


def test_missing_file_and_no_usable_pairs(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_parallel(tmp_path / "nope.tsv", [])
    empty = tmp_path / "bad.tsv"
    empty.write_text("one column only\n")
    with pytest.raises(DataError, match="no usable sentence pairs"):
        read_sources([str(empty)], [])


def test_cap_per_language(tmp_path):
    root = _stsb(tmp_path, ["en", "de"], rows=5)
    corpus = read_sources([str(root)], ["de"], max_per_language=3)
    assert corpus.languages() == {"de": 3}
