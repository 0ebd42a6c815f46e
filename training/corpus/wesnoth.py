"""Dialogue and story text of Battle for Wesnoth (GPL-2+): gettext catalogues in
`usr/share/games/wesnoth/<branch>/locale/<ll>/LC_MESSAGES/`. `wesnoth-<branch>-data`
carries the core catalogues (`wesnoth.mo`, help, units, tutorial, multiplayer, the
Wesnoth-wide UI `wesnoth-lib.mo` and `wesnoth-editor.mo`); each campaign package
`wesnoth-<branch>-<id>` carries its own `wesnoth-<id>.mo` (the campaign's dialogue)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from training.corpus import gettext
from training.corpus.sentences import split_pair

BRANCH = "1.16"  # Debian 12 (bookworm)
CAMPAIGNS = (
    "did", "dm", "dw", "ei", "httt", "l", "low", "nr", "sof", "sota", "sotbe", "thot",
    "trow", "tsg", "ttb", "utbs",
)  # fmt: skip
# catalogues of interface strings: the UI filters (min words, share cap) apply to them
UI_CATALOGUES = {"wesnoth-lib", "wesnoth-editor"}


def package_names(branch: str = BRANCH) -> list[str]:
    """The data package and every official campaign package of a Wesnoth branch."""
    return [f"wesnoth-{branch}-data"] + [f"wesnoth-{branch}-{c}" for c in CAMPAIGNS]


def pairs(root: Path, language: str) -> Iterator[tuple[str, str, bool]]:
    """(english, translation, is_ui) of every catalogue of `language` in an unpacked
    Wesnoth package; multi-sentence story texts become sentence pairs when both sides
    have the same number of sentences."""
    for catalogue in gettext.catalogues(root, language):
        ui = catalogue.stem in UI_CATALOGUES
        for english, text in gettext.catalogue_pairs(catalogue):
            for en, xx in split_pair(english, text):
                yield en, xx, ui
