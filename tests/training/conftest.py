"""Tiny in-test parallel data (English-German) for fast distillation runs."""

from __future__ import annotations

import pytest

PAIRS = [
    ("The dog plays in the garden.", "Der Hund spielt im Garten."),
    ("A man is playing the guitar.", "Ein Mann spielt Gitarre."),
    ("The weather is nice today.", "Das Wetter ist heute schön."),
    ("I like to read books.", "Ich lese gerne Bücher."),
    ("The train is late again.", "Der Zug hat wieder Verspätung."),
    ("She drinks coffee every morning.", "Sie trinkt jeden Morgen Kaffee."),
    ("The children are sleeping.", "Die Kinder schlafen."),
    ("We are going to the beach.", "Wir fahren an den Strand."),
    ("The stock market fell sharply.", "Die Börse ist stark gefallen."),
    ("He forgot his umbrella.", "Er hat seinen Regenschirm vergessen."),
    ("The cat is on the roof.", "Die Katze ist auf dem Dach."),
    ("Please close the window.", "Bitte schließ das Fenster."),
    ("The soup is too hot.", "Die Suppe ist zu heiß."),
    ("My brother lives in Berlin.", "Mein Bruder wohnt in Berlin."),
    ("The meeting starts at nine.", "Das Treffen beginnt um neun."),
    ("Birds are singing outside.", "Draußen singen Vögel."),
]


@pytest.fixture
def tiny_tsv(tmp_path):
    path = tmp_path / "tiny-en-de.tsv"
    path.write_text("".join(f"{en}\t{de}\n" for en, de in PAIRS))
    return path


def tiny_args(tsv, output, *extra: str) -> list[str]:
    """A fast run: the teacher copied into a 2-layer student, fp32 on CPU, no evaluation."""
    return [
        "--train", str(tsv), "--student", "teacher", "--student-layers", "2",
        "--batch-size", "8", "--lr", "1e-4", "--warmup-ratio", "0", "--max-seq-length", "32",
        "--output", str(output), "--cache-dir", str(output.parent / "cache"),
        "--skip-eval", "--export", "none", "--logging-steps", "1", "--save-steps", "2",
        "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    """`fake_command(name, script, path_rest)`: an executable shell script `name` in a
    fresh bin folder put first on PATH (then `path_rest`), standing in for apt-get or npm."""

    def install(name: str, script: str, path_rest: str = "/usr/bin:/bin") -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        fake = bin_dir / name
        fake.write_text("#!/bin/sh\n" + script)
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{path_rest}")

    return install
