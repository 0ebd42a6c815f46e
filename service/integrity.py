"""Safe writes and checked reads of artefact files (ONNX files, report.json), for one
process or several sharing a folder (replicas on one volume).

- A file is written under a unique temporary name in its own folder and renamed into place
  (`atomic_path`): readers never see a half-written file, and two writers never share a
  temporary file (the last rename wins, with a complete file either way).
- Every ONNX file the project writes gets a content hash beside it, `<file>.sha256` in
  `sha256sum` format (`record_hash`; `sha256sum -c model.onnx.sha256` checks it by hand).
  `check` compares the file with it before the file is served: a file damaged after it
  was written (disk, copy, a partial sync) is `DAMAGED`.
- Writers of one folder hold its lock (`folder_lock`, the filelock package: an OS file
  lock, released when the process dies), so replicas starting together on one empty cache
  export once; the others wait, then find the file.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
HASH_SUFFIX = ".sha256"
LOCK_FILE = ".polyglot-embed.lock"
# How long a replica waits for another one's export or int8 build (a multi-GB model on a
# slow host takes minutes; the wait is logged every LOCK_LOG_S).
LOCK_TIMEOUT_S = 1800.0
LOCK_LOG_S = 30.0


class Integrity(enum.Enum):
    INTACT = "intact"  # the content matches the hash recorded when it was written
    DAMAGED = "damaged"  # it does not
    UNRECORDED = "unrecorded"  # no hash recorded (a file written by an older version)


def sha256_of(path: Path) -> str:
    """sha256 hex of a file's content (reads it in chunks; ~0.1 s per 100 MB here)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def hash_path(file: Path) -> Path:
    """Where the content hash of `file` is kept: `<file>.sha256`."""
    return Path(file).with_name(Path(file).name + HASH_SUFFIX)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A unique temporary path beside `target` to write to; renamed onto `target` when the
    block ends without an exception, removed otherwise."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a unique temporary file and a rename."""
    with atomic_path(path) as partial:
        partial.write_text(text)


def record_hash(file: Path) -> str:
    """Compute and store the content hash of `file` (atomically); returns it."""
    digest = sha256_of(file)
    write_text_atomic(hash_path(file), f"{digest}  {Path(file).name}\n")
    return digest


def recorded_hash(file: Path) -> str | None:
    """The hash recorded for `file` (None: none, or unreadable)."""
    try:
        return hash_path(file).read_text().split()[0]
    except (OSError, IndexError):
        return None


_checked: dict[tuple, Integrity] = {}  # (path, size, mtime, inode, hash) -> verdict


def check(file: Path) -> Integrity:
    """Whether `file`'s content matches the hash recorded when it was written. Hashes the
    file once per process and version of the file (size, mtime, inode)."""
    expected = recorded_hash(file)
    if expected is None:
        return Integrity.UNRECORDED
    stat = Path(file).stat()
    key = (str(file), stat.st_size, stat.st_mtime_ns, stat.st_ino, expected)
    if key not in _checked:
        intact = sha256_of(file) == expected
        _checked[key] = Integrity.INTACT if intact else Integrity.DAMAGED
    return _checked[key]


@contextmanager
def folder_lock(folder: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the writers' lock of `folder` (created if missing) for the block; waits for
    another process's export or build, logging while it waits. Raises filelock.Timeout
    after `timeout_s`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE)
    waited = 0.0
    while True:
        try:
            lock.acquire(timeout=min(LOCK_LOG_S, timeout_s - waited))
            break
        except Timeout:
            waited += LOCK_LOG_S
            if waited >= timeout_s:
                raise
            log.info("waiting for another process writing into %s (%.0f s)", folder, waited)
    try:
        yield
    finally:
        lock.release()
