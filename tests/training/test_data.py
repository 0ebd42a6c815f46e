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


def test_utf8_bom_is_not_part_of_the_first_sentence(tmp_path):
    path = tmp_path / "bom-en-de.tsv"
    path.write_bytes("\ufeffHello world\tHallo Welt\nGood night\tGute Nacht\n".encode())
    assert read_parallel_tsv(path).triples[0] == ("Hello world", "Hallo Welt", "de")
    gz = tmp_path / "bom.en-de.tsv.gz"
    with gzip.open(gz, "wb") as handle:
        handle.write("\ufeffHello world\tHallo Welt\n".encode())
    assert read_parallel_tsv(gz).triples == [("Hello world", "Hallo Welt", "de")]


def test_cap_samples_at_random_not_the_head(tmp_path):
    """A file ordered by genre must not give only its first genre (issue 17, 1b)."""
    path = tmp_path / "ordered-en-de.tsv"
    lines = [f"caption number {i}\tBildunterschrift {i}" for i in range(500)]
    lines += [f"news item number {i}\tNachricht {i}" for i in range(500)]
    path.write_text("\n".join(lines) + "\n")
    capped = read_sources([str(path)], [], max_per_language=100, seed=1)
    english = [e for e, _, _ in capped.triples]
    assert len(english) == 100
    news = sum(e.startswith("news") for e in english)
    assert 30 < news < 70  # both halves of the file, not its first 100 rows
    again = read_sources([str(path)], [], max_per_language=100, seed=1)
    assert again.triples == capped.triples  # seeded: reproducible
    other = read_sources([str(path)], [], max_per_language=100, seed=2)
    assert other.triples != capped.triples


def test_folder_of_tsv_files_reads_the_asked_languages_and_split(tmp_path):
    for split, rows in (("train", 3), ("dev", 1)):
        (tmp_path / split).mkdir()
        for lang in ("de", "fr"):
            with gzip.open(tmp_path / split / f"corpus.en-{lang}.tsv.gz", "wt") as handle:
                handle.writelines(f"English {i}\t{lang} {i}\n" for i in range(rows))
    corpus = read_parallel(tmp_path, ["de"])
    assert corpus.languages() == {"de": 3}
    assert read_parallel(tmp_path, ["de", "fr"], split="dev").languages() == {"de": 1, "fr": 1}
    with pytest.raises(DataError, match=r"no TSV file for language\(s\) it.*found: de, fr"):
        read_parallel(tmp_path, ["it"])
