"""Streaming readers of a corpus: JSONL, Parquet, CSV / TSV, and folders of .txt / .md files.

Every reader yields `Document`s one at a time (Parquet in record batches of BATCH_ROWS), so
memory does not grow with the corpus. Bad input is reported where it is, counted in
`ReadStats`, and skipped, or raised as `InputError` with `strict`:
  - a malformed line / row: "FILE:LINE: why";
  - undecodable bytes (not UTF-8): "FILE:LINE: byte offset N: ...";
  - empty or whitespace-only text: skipped and counted (never an error);
  - a missing --text-field / --id-field column: always an error (nothing can be read).

Default ids (no --id-field): "<file name>:<n>" with n the 1-based line (JSONL) or data row
(Parquet, CSV), and the path relative to the given folder for a folder of text files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

BATCH_ROWS = 1024  # Parquet rows decoded at a time
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUPPORTED = "JSONL (.jsonl/.ndjson/.json), Parquet (.parquet), CSV (.csv), TSV (.tsv), or a folder"


class InputError(ValueError):
    """Input that cannot be read; the message names the file (and line / offset)."""


class WrongFieldError(InputError):
    """The input has no such text field (a JSONL file's first record lacks it): stops the
    run even without --strict."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    where: str  # "file:line" for messages
    record: int  # 1-based index of the input record over all inputs (skipped ones included)
    progress: int  # input bytes consumed so far, over all inputs (approximate for Parquet)


@dataclass
class ReadStats:
    records: int = 0  # input records seen (documents + skipped)
    documents: int = 0  # documents yielded
    malformed: int = 0  # malformed lines / rows (and undecodable ones)
    empty: int = 0  # empty or whitespace-only texts
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS messages

    MAX_PROBLEMS = 20

    @property
    def skipped(self) -> int:
        return self.malformed + self.empty

    def note(self, message: str) -> None:
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(message)


@dataclass(frozen=True)
class ReadSpec:
    text_field: str = "text"
    id_field: str | None = None
    strict: bool = False


def input_files(inputs: Iterable[str | Path]) -> list[tuple[Path, Path | None]]:
    """(file, folder it was found in or None) for every input; folders expand to their
    .txt / .md files (recursive, sorted). Raises InputError for a missing path or an
    unsupported suffix."""
    files: list[tuple[Path, Path | None]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
            )
            if not found:
                raise InputError(f"{path}: no .txt or .md files in this folder")
            files.extend((p, path) for p in found)
        elif path.is_file():
            if _kind(path) is None:
                raise InputError(f"{path}: unsupported input; expected {SUPPORTED}")
            files.append((path, None))
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def total_bytes(files: list[tuple[Path, Path | None]]) -> int:
    return sum(path.stat().st_size for path, _ in files)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix in CSV_DELIMITERS:
        return "csv"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def read_documents(
    inputs: Iterable[str | Path], spec: ReadSpec, stats: ReadStats | None = None
) -> Iterator[Document]:
    """Every non-empty document of `inputs`, in input order, streaming. Counts into
    `stats`; raises InputError (missing field, or any bad record with spec.strict)."""
    stats = stats if stats is not None else ReadStats()
    files = input_files(inputs)
    consumed = 0
    for path, folder in files:
        kind = "text" if folder is not None else _kind(path)
        reader = {"jsonl": _jsonl, "parquet": _parquet, "csv": _csv, "text": _text_file}[kind]
        for raw_id, text, where, offset in reader(path, folder, spec, stats):
            stats.records += 1
            if text is None:  # malformed: already noted
                continue
            if not text.strip():
                stats.empty += 1
                continue
            stats.documents += 1
            yield Document(raw_id, text, where, stats.records, consumed + offset)
        consumed += path.stat().st_size


def _bad(stats: ReadStats, spec: ReadSpec, message: str):
    """A malformed record: raise with strict, else count it and carry on."""
    if spec.strict:
        raise InputError(message + " (--strict stops at the first bad record)")
    stats.malformed += 1
    stats.note(message)


def _decode(raw: bytes, path: Path, line: int, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path}:{line}: byte offset {offset + error.start}: not UTF-8 ({error.reason})"
        ) from None


def _field_value(value, field_name: str) -> str | None:
    """An id: a string, or a number / bool written as one; None for a null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise TypeError(f"{field_name} is a {type(value).__name__}, not a string")


def _text_value(value, field_name: str) -> str:
    """A text: a string ("" for a null, counted as empty); a number or anything else is a
    bad record (a wrong --text-field more likely than a text)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{field_name} is a {type(value).__name__}, not a string")
    return value


def _jsonl(path: Path, folder, spec: ReadSpec, stats: ReadStats):
    offset, first_object = 0, True
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            where = f"{path}:{line_no}"
            if not raw.strip():
                continue  # a blank line is no record
            try:
                record = json.loads(_decode(raw, path, line_no, start))
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                if spec.text_field not in record:
                    if first_object:  # a wrong --text-field, not one bad line
                        _wrong_field(where, spec.text_field, record)
                    raise ValueError(f"no field {spec.text_field!r} (--text-field)")
                first_object = False
                text = _text_value(record[spec.text_field], spec.text_field)
                doc_id = _record_id(record, spec, path, line_no)
            except WrongFieldError:
                raise
            except (InputError, ValueError, TypeError) as error:
                message = str(error) if isinstance(error, InputError) else f"{where}: {error}"
                _bad(stats, spec, message)
                yield None, None, where, offset
                continue
            yield doc_id, text, where, offset


def _wrong_field(where: str, field_name: str, record: dict) -> None:
    """A JSONL file's first record lacks the text field: a wrong --text-field (as a missing
    column of a CSV or Parquet file), not one bad line; stop before embedding anything."""
    fields = ", ".join(repr(name) for name in list(record)[:20]) or "none"
    raise WrongFieldError(
        f"{where}: the first record has no field {field_name!r} (--text-field); its fields: "
        f"{fields}"
    )


def _record_id(record: dict, spec: ReadSpec, path: Path, number: int) -> str:
    if spec.id_field is None:
        return f"{path.name}:{number}"
    value = _field_value(record.get(spec.id_field), spec.id_field)
    if value is None or value == "":
        raise ValueError(f"no value for the id field {spec.id_field!r} (--id-field)")
    return value


def _parquet(path: Path, folder, spec: ReadSpec, stats: ReadStats):
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for a broken file
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    columns = [spec.text_field] + ([spec.id_field] if spec.id_field else [])
    for column in columns:
        if column not in names:
            flag = "--text-field" if column == spec.text_field else "--id-field"
            raise InputError(f"{path}: no column {column!r} ({flag}); columns: {names}")
    rows = max(parquet.metadata.num_rows, 1)
    size = path.stat().st_size
    row = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        data = batch.to_pydict()
        for index in range(batch.num_rows):
            row += 1
            where = f"{path}:{row}"
            offset = size * row // rows
            try:
                text = _text_value(data[spec.text_field][index], spec.text_field)
                record = {spec.id_field: data[spec.id_field][index]} if spec.id_field else {}
                doc_id = _record_id(record, spec, path, row)
            except (ValueError, TypeError) as error:
                _bad(stats, spec, f"{where}: {error}")
                yield None, None, where, offset
                continue
            yield doc_id, text, where, offset


def _decoded_lines(path: Path, handle, state: dict) -> Iterator[str]:
    """Lines of a binary file as str for the csv module; `state` tracks the line number,
    the byte offset after it, and the message of an undecodable line (which is given to
    the csv module as an empty line, so reading goes on)."""
    for raw in handle:
        state["line"] += 1
        start = state["offset"]
        state["offset"] += len(raw)
        try:
            yield _decode(raw, path, state["line"], start)
        except InputError as error:
            state["error"] = str(error)
            yield "\n"


def _csv(path: Path, folder, spec: ReadSpec, stats: ReadStats):
    delimiter = CSV_DELIMITERS[path.suffix.lower()]
    state = {"line": 0, "offset": 0, "error": None}
    with open(path, "rb") as handle:
        reader = csv.reader(_decoded_lines(path, handle, state), delimiter=delimiter)
        header = next(reader, None)
        if state["error"]:
            raise InputError(f"{state['error']} (in the header)")
        if header is None:
            return
        for column in [spec.text_field] + ([spec.id_field] if spec.id_field else []):
            if column not in header:
                flag = "--text-field" if column == spec.text_field else "--id-field"
                raise InputError(f"{path}: no column {column!r} ({flag}); columns: {header}")
        text_at = header.index(spec.text_field)
        row = 0
        while True:
            try:
                values = next(reader)
                problem, state["error"] = state["error"], None
            except StopIteration:
                return
            except csv.Error as error:
                problem = f"{path}:{state['line']}: {error}"
            where = f"{path}:{state['line']}"
            if not values and problem is None:
                continue
            row += 1
            if problem is None and len(values) != len(header):
                problem = f"{where}: {len(values)} fields, the header has {len(header)}"
            if problem is None:
                try:
                    doc_id = _record_id(dict(zip(header, values)), spec, path, row)
                except ValueError as error:
                    problem = f"{where}: {error}"
            if problem is not None:
                _bad(stats, spec, problem)
                yield None, None, where, state["offset"]
                continue
            yield doc_id, values[text_at], where, state["offset"]


def _text_file(path: Path, folder: Path | None, spec: ReadSpec, stats: ReadStats):
    raw = path.read_bytes()
    doc_id = path.relative_to(folder).as_posix() if folder is not None else path.name
    try:
        text = _decode(raw, path, 1, 0)
    except InputError:
        line = raw[: _bad_byte(raw)].count(b"\n") + 1
        message = f"{path}:{line}: byte offset {_bad_byte(raw)}: not UTF-8"
        _bad(stats, spec, message)
        yield None, None, f"{path}:{line}", len(raw)
        return
    yield doc_id, text, str(path), len(raw)


def _bad_byte(raw: bytes) -> int:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start
    return len(raw)
