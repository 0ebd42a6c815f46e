"""Debian packages fetched WITHOUT installing them: `apt-get download` into a cache folder,
`dpkg-deb -x` into a folder of their own; version and licence read from the package."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "polyglot-embed" / "debs"


class PackageError(RuntimeError):
    """A package that cannot be downloaded or unpacked (missing tool, unknown name)."""


@dataclass
class Package:
    """An unpacked package: `root` is the folder its files were extracted into."""

    name: str
    version: str
    licence: str
    root: Path

    def card(self) -> dict:
        return {"package": self.name, "version": self.version, "licence": self.licence}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PackageError(f"{name} not found: the corpus builder needs a Debian/Ubuntu host")
    return path


def update_indexes() -> None:
    """`apt-get update` (needs root), so that `apt-get download` finds current versions."""
    subprocess.run([_tool("apt-get"), "update", "-q"], check=True, stdout=subprocess.DEVNULL)


def download(name: str, cache: Path) -> Path | None:
    """The package's .deb in `cache` (downloaded once; reused afterwards). None when apt
    does not know the package (e.g. no help for that language)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    result = subprocess.run(
        [_tool("apt-get"), "download", "-q", name],
        cwd=cache,
        capture_output=True,
        text=True,
    )
    found = sorted(cache.glob(f"{name}_*.deb"))
    if result.returncode != 0 or not found:
        log.warning("apt-get download %s failed: %s", name, result.stderr.strip()[-300:])
        return None
    return found[-1]


def licence_of(root: Path, name: str) -> str:
    """The `License:` of the `Files: *` stanza of the package's DEP-5 copyright file, else
    its first one-line `License:` field, else a "GNU GPL, version N" in its prose, else
    "not stated"."""
    path = root / "usr" / "share" / "doc" / name / "copyright"
    if not path.is_file():
        return "not stated (no copyright file)"
    text = path.read_text(encoding="utf-8", errors="replace")
    stanza = re.search(r"^Files:\s*\*\s*$(.*?)(?:^\s*$|\Z)", text, re.M | re.S)
    for block in (stanza.group(1) if stanza else "", text):
        match = re.search(r"^License:[ \t]*(\S.*)$", block, re.M)
        if match:
            return match.group(1).strip()
    gpl = re.search(r"GNU (?:GPL|General Public License),? version (\d)", " ".join(text.split()))
    if gpl:
        return f"GPL-{gpl.group(1)} (stated in the copyright file's prose)"
    return "not stated in the copyright file"


def unpack(deb: Path, cache: Path) -> Package:
    """Extract `deb` (once) under `cache/unpacked/` and describe it."""
    fields = subprocess.run(
        [_tool("dpkg-deb"), "-f", str(deb), "Package", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    name, version = info["Package"], info["Version"]
    root = cache / "unpacked" / f"{name}_{version.replace(':', '%3a')}"
    done = root / ".unpacked"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        subprocess.run([_tool("dpkg-deb"), "-x", str(deb), str(root)], check=True)
        done.touch()
    return Package(name, version, licence_of(root, name), root)


def fetch(name: str, cache: Path = DEFAULT_CACHE) -> Package | None:
    """Download (not install) and unpack package `name`; None when it does not exist."""
    deb = download(name, cache)
    return unpack(deb, cache) if deb else None
