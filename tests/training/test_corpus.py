"""The corpus builder on tiny fixtures written in the test: fake unpacked help trees, a
tiny .po/.mo catalogue, a fake evaluation folder. Nothing is downloaded."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import polib
import pytest

from training.corpus import gettext, libreoffice_help
from training.corpus.build import BuildConfig, build, sample_train
from training.corpus.debian import Package, fetch, licence_of
from training.corpus.filters import FilterConfig, FilterStats, Pair, cap_ui_share, filter_pairs
from training.data import read_parallel

HELP = {
    "en-US": [
        ("par_id1", "Choose a template for the new document you are creating."),
        ("par_id2", "This paragraph has no translation in the other tree at all."),
        ("par_id3", "A man is playing the guitar on the stage."),  # also in the eval set
        ("hd_id4", "Inserting a table into a text document"),
        ("par_id5", "Click the button to close the dialog without saving."),
        ("par_id6", "LibreOffice Writer keeps the formatting of your document."),
    ],
    "de": [
        ("par_id1", "Wählen Sie eine Vorlage für das neue Dokument, das Sie erstellen."),
        ("par_id3", "Ein Mann spielt auf der Bühne Gitarre."),
        ("hd_id4", "Eine Tabelle in ein Textdokument einfügen"),
        ("par_id5", "Click the button to close the dialog without saving."),  # untranslated
        ("par_id6", "LibreOffice Writer behält die Formatierung Ihres Dokuments bei."),
    ],
}
HIDDEN = (
    '<p id="par_id9">Choose <span hidden="true">Tools - Options</span>'
    '<span hidden="true">Preferences</span> to set it.</p>'
)


def _help_tree(root: Path, code: str, paragraphs) -> Path:
    folder = root / "usr" / "share" / "libreoffice" / "help" / code / "text" / "shared"
    folder.mkdir(parents=True)
    body = "".join(f'<p id="{i}" class="paragraph">{t}</p>' for i, t in paragraphs)
    (folder / "page.html").write_text(f"<html><body>{body}{HIDDEN}</body></html>")
    copyright_dir = root / "usr" / "share" / "doc" / root.name
    copyright_dir.mkdir(parents=True)
    (copyright_dir / "copyright").write_text("Files: *\nCopyright: x\nLicense: MPL-2.0\n")
    return root


def _catalogue(root: Path, locale: str, package: str) -> Path:
    folder = root / "usr" / "lib" / "libreoffice" / "program" / "resource" / locale
    (folder / "LC_MESSAGES").mkdir(parents=True)
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "X-Accelerator-Marker": "~"}
    entries = [
        (
            "Save the ~document in a different file format first.",
            "Speichern Sie das ~Dokument zuerst in einem anderen Dateiformat.",
        ),
        (
            "Show _Coefficient of Determination for the trend line",
            "_Bestimmtheitsmaß für die Trendlinie anzeigen",
        ),
        ("Close", "Schließen"),  # a fragment: fewer than 5 words
        ("Deleted %1 rows from the current sheet", "%1 Zeilen aus der aktuellen Tabelle gelöscht"),
        ("Not yet translated string of six words", ""),
    ]
    for msgid, msgstr in entries:
        po.append(polib.POEntry(msgid=msgid, msgstr=msgstr))
    po.append(
        polib.POEntry(msgid="A fuzzy entry with enough words", msgstr="Unscharf", flags=["fuzzy"])
    )
    po.save_as_mofile(str(folder / "LC_MESSAGES" / "sc.mo"))
    copyright_dir = root / "usr" / "share" / "doc" / package
    copyright_dir.mkdir(parents=True)
    (copyright_dir / "copyright").write_text("License: MPL-2.0\n")
    return root


def _fake_packages(tmp_path: Path) -> dict[str, Package]:
    en = _help_tree(tmp_path / "libreoffice-help-en-us", "en-US", HELP["en-US"])
    de = _help_tree(tmp_path / "libreoffice-help-de", "de", HELP["de"])
    l10n = _catalogue(tmp_path / "l10n-de", "de", "libreoffice-l10n-de")
    return {
        "libreoffice-help-en-us": Package("libreoffice-help-en-us", "1:7.4", "MPL-2.0", en),
        "libreoffice-help-de": Package("libreoffice-help-de", "1:7.4", "MPL-2.0", de),
        "libreoffice-l10n-de": Package("libreoffice-l10n-de", "1:7.4", "MPL-2.0", l10n),
    }


def _eval_folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "stsb-multi-mt").mkdir(parents=True)
    (data / "stsb-multi-mt" / "stsb-en-test.csv").write_text(
        '"A man is playing the guitar on the stage.","Someone plays.",4.0\n'
    )
    (data / "stsb-multi-mt" / "stsb-en-dev.csv").write_text('"x y z","a b c",1.0\n')
    (data / "tatoeba").mkdir()
    (data / "tatoeba" / "tatoeba.deu-eng.deu").write_text("Ich bin müde.\n")
    (data / "tatoeba" / "tatoeba.deu-eng.eng").write_text("I am tired.\n")
    return data


def test_help_paragraphs_align_by_page_and_id(tmp_path):
    packages = _fake_packages(tmp_path)
    en_root = libreoffice_help.help_root(packages["libreoffice-help-en-us"].root)
    de_root = libreoffice_help.help_root(packages["libreoffice-help-de"].root)
    assert en_root.name == "en-US" and de_root.name == "de"
    pairs = dict(libreoffice_help.aligned_pairs(en_root, de_root))
    assert pairs["Inserting a table into a text document"] == (
        "Eine Tabelle in ein Textdokument einfügen"
    )
    assert "This paragraph has no translation in the other tree at all." not in pairs
    assert not any("Preferences" in english for english in pairs)  # hidden variants skipped
    assert libreoffice_help.package_names("pt") == [
        "libreoffice-help-pt",
        "libreoffice-help-pt-br",
    ]


def test_gettext_catalogue_pairs(tmp_path):
    root = _catalogue(tmp_path / "pkg", "de", "pkg")
    found = gettext.catalogues(root, "de")
    assert [p.name for p in found] == ["sc.mo"]
    pairs = dict(gettext.catalogue_pairs(found[0]))
    assert pairs == {
        "Save the document in a different file format first.": (
            "Speichern Sie das Dokument zuerst in einem anderen Dateiformat."
        ),
        "Show Coefficient of Determination for the trend line": (
            "Bestimmtheitsmaß für die Trendlinie anzeigen"
        ),
        "Close": "Schließen",
    }  # placeholders, untranslated and fuzzy entries dropped, accelerators removed
    assert gettext.locale_language("pt_BR") == "pt"
    assert gettext.locale_language("zh_TW") is None and gettext.locale_language("zh-CN") == "zh"
    assert gettext.locale_language("sr@latin") is None


def test_filters_count_what_they_remove():
    config = FilterConfig(max_translations_per_english=2)
    pairs = [
        Pair("Too short", "Zu kurz", "de", "s"),
        Pair("Open the file menu now", "Öffnen Sie jetzt das Dateimenü", "de", "s"),
        Pair("Open the file menu now", "Öffnen Sie jetzt das Dateimenü", "de", "s"),  # dup
        Pair("Open the file menu now", "Öffne jetzt das Dateimenü", "de", "s"),
        Pair("Open the file menu now", "Jetzt das Dateimenü öffnen", "de", "s"),  # 3rd
        Pair("Save it as a new file", "Save it as a new file", "de", "s"),  # untranslated
        Pair("Save it as a new file", "Сохраните как новый файл", "de", "s"),  # script
        Pair("Save it as a new file", "Save as new file", "ru", "s"),  # script (ru)
        Pair("Save it as a new file", "Сохраните его как новый файл", "ru", "s"),
        Pair("Save it as a new file", "Speichern", "de", "s"),  # length ratio
        Pair("Save it as a new file", "将其另存为新文件", "zh", "s"),  # zh: characters
        Pair("I am tired, really", "Ich bin müde.", "de", "s"),  # evaluation overlap
        Pair("Click OK now", "Klicken Sie jetzt auf OK", "de", "s", ui=True),
    ]
    stats = FilterStats()
    kept = filter_pairs(pairs, config, {"ich bin müde"}, stats)
    assert [(p.text, p.language) for p in kept] == [
        ("Öffnen Sie jetzt das Dateimenü", "de"),
        ("Öffne jetzt das Dateimenü", "de"),
        ("Сохраните его как новый файл", "ru"),
        ("将其另存为新文件", "zh"),
    ]
    assert stats.by_source()["s"] == {
        "duplicate": {"de": 1},
        "english_length": {"de": 1},
        "evaluation_overlap": {"de": 1},
        "length_ratio": {"de": 1},
        "script": {"de": 1, "ru": 1},
        "translations_per_english": {"de": 1},
        "ui_min_words": {"de": 1},
        "untranslated": {"de": 1},
    }


def test_ui_share_is_capped_at_random():
    other = [Pair(f"help sentence number {i}", f"Hilfesatz {i}", "de", "h") for i in range(7)]
    ui = [Pair(f"ui string number {i} here", f"UI {i}", "de", "u", ui=True) for i in range(10)]
    stats = FilterStats()
    kept = cap_ui_share(other + ui, FilterConfig(max_ui_share=0.3), stats, seed=0)
    assert sum(p.ui for p in kept) == 3  # 0.3 / 0.7 * 7
    assert stats.by_source() == {"u": {"ui_share_cap": {"de": 7}}}


def test_train_sample_is_balanced_seeded_and_keeps_order():
    pairs = [Pair(f"english sentence {i}", f"Satz {i}", "de", "h") for i in range(50)]
    pairs += [Pair(f"english line {i}", f"phrase {i}", "fr", "h") for i in range(5)]
    sample = sample_train(pairs, 10, seed=1)
    by_language = {lang: [p for p in sample if p.language == lang] for lang in ("de", "fr")}
    assert len(by_language["de"]) == 10 and len(by_language["fr"]) == 5
    assert by_language["de"] != pairs[:10]  # a random draw, not the head of the list
    assert sample == sorted(sample, key=pairs.index)
    assert sample == sample_train(pairs, 10, seed=1)
    assert sample_train(pairs, None, seed=1) == pairs


def test_build_records_the_train_sample_in_the_card(tmp_path):
    config = BuildConfig(
        languages=["de"],
        output=tmp_path / "corpus",
        data_dir=_eval_folder(tmp_path),
        dev_per_language=1,
        max_train_per_language=2,
        filters=FilterConfig(max_ui_share=0.5),
    )
    card = build(config, fetcher=_fake_packages(tmp_path).get, command="build")
    assert card["pairs"]["train"]["de"] == 2
    assert card["train_pairs_before_sampling"]["de"] == 4
    assert "at most 2 pairs per language, from de 4" in (
        (tmp_path / "corpus" / "DATA_CARD.md").read_text()
    )


def test_build_writes_tsv_that_distill_reads_and_a_data_card(tmp_path):
    packages = _fake_packages(tmp_path)
    output = tmp_path / "corpus"
    config = BuildConfig(
        languages=["de", "fr"],
        output=output,
        data_dir=_eval_folder(tmp_path),
        dev_per_language=1,
        filters=FilterConfig(max_ui_share=0.5),
    )
    card = build(config, fetcher=packages.get, command="python -m training.corpus build")
    train = read_parallel(output, ["de"])
    dev = read_parallel(output, ["de"], split="dev")
    assert train.triples and len(dev.triples) == 1
    assert not set(train.english()) & set(dev.english())
    everything = train.english() + dev.english()
    assert "A man is playing the guitar on the stage." not in everything  # evaluation set
    assert "Click the button to close the dialog without saving." not in everything
    assert read_parallel(output, ["en"]).languages()["en"] == len(train.english())
    assert card["pairs"]["train"]["de"] + card["pairs"]["dev"]["de"] == 5
    help_source = card["sources"]["libreoffice-help"]
    assert {"package": "libreoffice-help-de", "version": "1:7.4", "licence": "MPL-2.0"} in (
        help_source["packages"]
    )
    assert help_source["missing_packages"] == ["libreoffice-help-fr"]
    removed = card["filters"]["removed"]
    assert removed["libreoffice-help"]["evaluation_overlap"] == {"de": 1}
    assert removed["libreoffice-help"]["untranslated"] == {"de": 1}
    assert removed["libreoffice-l10n"]["english_length"] == {"de": 1}  # "Close"
    markdown = (output / "DATA_CARD.md").read_text()
    assert (
        "`libreoffice-help-de` 1:7.4 (MPL-2.0)" in markdown and "| evaluation_overlap |" in markdown
    )
    assert json.loads((output / "data_card.json").read_text())["seed"] == 42


def test_licence_is_read_from_the_files_stanza(tmp_path):
    doc = tmp_path / "usr" / "share" / "doc" / "pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: x\n\nFiles: debian/*\nLicense: GPL-2+\n\nFiles: *\nCopyright: y\n"
        "License: MPL-2.0\n"
    )
    assert licence_of(tmp_path, "pkg") == "MPL-2.0"
    assert licence_of(tmp_path, "other").startswith("not stated")


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_downloads_with_apt_and_unpacks_without_installing(tmp_path, fake_command):
    """A real .deb built here, served by a fake `apt-get download` on PATH."""
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: tiny-help\nVersion: 1:2.0-1\nArchitecture: all\nMaintainer: t <t@t>\n"
        "Description: tiny\n"
    )
    _help_tree(tree, "de", HELP["de"])
    (tree / "usr" / "share" / "doc" / "tiny-help").mkdir(parents=True)
    (tree / "usr" / "share" / "doc" / "tiny-help" / "copyright").write_text("License: MIT\n")
    deb = tmp_path / "tiny-help_2.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    fake_command(
        "apt-get",
        f'[ "$1 $3" = "download tiny-help" ] && cp {deb} . || exit 100\n',
        str(Path(shutil.which("dpkg-deb")).parent),
    )
    package = fetch("tiny-help", tmp_path / "cache")
    assert (package.name, package.version, package.licence) == ("tiny-help", "1:2.0-1", "MIT")
    assert libreoffice_help.help_root(package.root).name == "de"
    assert fetch("tiny-help", tmp_path / "cache").root == package.root  # cached
    assert fetch("no-such-package", tmp_path / "cache") is None
