"""The data card of a built corpus: `data_card.json` (everything) and `DATA_CARD.md` (the
same for a reader: packages and versions, licences, pairs per language, filters and what
each removed)."""

from __future__ import annotations

import json
from pathlib import Path


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _sampling_line(card: dict) -> str:
    cap = card.get("max_train_per_language")
    if not cap:
        return "- Train split: every pair that passed the filters."
    before = card.get("train_pairs_before_sampling", {})
    counts = ", ".join(f"{lang} {n}" for lang, n in sorted(before.items()))
    return (
        f"- Train split: a seeded random sample (seed {card['seed']}) of at most {cap} pairs "
        f"per language, from {counts} that passed the filters."
    )


def render(card: dict) -> str:
    """The markdown data card."""
    languages = card["languages"]
    out = [
        "# Parallel corpus: data card",
        "",
        "English -> translation pairs extracted from Debian packages (downloaded with "
        "`apt-get download`, never installed) and English-only sentences from npm packages "
        "(`npm pack`, never installed) by `python -m training.corpus build`.",
        "",
        f"- Command: `{card['command']}`",
        f"- Wall time: {card['wall_time_s']} s; seed {card['seed']}",
        f"- Dev split: about {card['dev_per_language']} pairs per language, chosen by English "
        "sentence; a dev English sentence is in no train file.",
        _sampling_line(card),
        f"- English-only sentences: a seeded random sample of at most {card['max_english_only']}."
        if card.get("max_english_only")
        else "- English-only sentences: all that passed the filters.",
        f"- Evaluation sets excluded: {len(card['evaluation_sets_excluded'])} files "
        "(stsb-multi-mt dev/test, Tatoeba): every pair whose English or translated side "
        "matches one of their sentences (case and punctuation ignored) is dropped."
        if card["evaluation_sets_excluded"]
        else "- Evaluation sets excluded: NONE (no data folder was found)",
        "",
        "## Pairs per language",
        "",
        _table(
            ["split", *languages, "en (en->en)"],
            [
                [split, *(counts.get(lang, 0) for lang in languages), counts.get("en", "")]
                for split, counts in card["pairs"].items()
            ],
        ),
        "",
        "Train pairs by source (en: English-only sentences a source added to the en->en file):",
        "",
        _table(
            ["source", *languages, "en"],
            [
                [source, *(counts.get(lang, 0) for lang in languages), counts.get("en", "")]
                for source, counts in card["pairs_by_source"].items()
            ],
        ),
        "",
        "## Sources",
        "",
    ]
    for source, info in card["sources"].items():
        packages = ", ".join(
            f"`{p['package']}` {p['version']} ({p['licence']})" for p in info["packages"]
        )
        out += [
            f"### {source}",
            "",
            f"- Licence: {info['licence']}",
            f"- Packages: {packages or 'none'}",
            f"- Not available: {', '.join(info['missing_packages']) or 'none'}",
            f"- Candidate pairs before filtering: {info['candidate_pairs']}",
        ]
        if info.get("pages_skipped"):
            out.append(
                f"- Pages not aligned (block counts differ), per language: {info['pages_skipped']}"
            )
        out.append("")
    filters = card["filters"]
    settings = {k: v for k, v in filters.items() if k != "removed"}
    out += ["## Filters", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    for source, reasons in filters["removed"].items():
        english_only = any("en" in by for by in reasons.values())
        columns = [*languages, "en"] if english_only else languages
        out += [
            f"Removed from {source} (first failing filter counts):",
            "",
            _table(
                ["filter", *columns],
                [
                    [reason, *(by.get(lang, 0) for lang in columns)]
                    for reason, by in reasons.items()
                ],
            ),
            "",
        ]
    return "\n".join(out) + "\n"


def write_data_card(output: Path, card: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "data_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False))
    (output / "DATA_CARD.md").write_text(render(card))
