"""`python -m training.corpus build --languages de,es,fr,it --output corpus`: see
training/corpus/__init__.py and docs/corpus.md."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.corpus.build import DEFAULT_SOURCES, SOURCES, BuildConfig, build, default_fetcher
from training.corpus.debian import DEFAULT_CACHE, PackageError, update_indexes
from training.corpus.filters import FilterConfig
from training.languages import parse_languages
from training.testsets import resolve_data_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.corpus")
    commands = p.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="download, extract and filter the parallel corpus")
    b.add_argument("--languages", required=True, help="comma-separated, e.g. de,es,fr,it")
    b.add_argument("--output", type=Path, default=Path("corpus"), help="default: corpus/")
    b.add_argument(
        "--sources",
        default=",".join(DEFAULT_SOURCES),
        help=f"subset of {','.join(SOURCES)} (default: {','.join(DEFAULT_SOURCES)})",
    )
    b.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help=".deb cache (npm tarballs: DIR/npm)"
    )
    b.add_argument(
        "--data", help="evaluation sets to exclude (default $POLYGLOT_DATA or ../shared/data)"
    )
    b.add_argument("--apt-update", action="store_true", help="run apt-get update first (root)")
    b.add_argument("--dev-per-language", type=int, default=500)
    b.add_argument(
        "--max-pairs-per-language",
        type=int,
        help="train pairs kept per language: a seeded random sample (default: all)",
    )
    b.add_argument(
        "--max-english-only",
        type=int,
        help="English-only sentences (sotu, brown) kept: a seeded random sample (default: all)",
    )
    b.add_argument("--max-translations-per-english", type=int, default=3)
    b.add_argument("--max-ui-share", type=float, default=0.3, help="of a language's pairs")
    b.add_argument("--seed", type=int, default=42)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sources = tuple(parse_languages(args.sources))
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise SystemExit(
            f"unknown source(s) {', '.join(sorted(unknown))}; known: {', '.join(SOURCES)}"
        )
    config = BuildConfig(
        languages=[lang for lang in parse_languages(args.languages) if lang != "en"],
        output=args.output,
        sources=sources,
        data_dir=resolve_data_dir(args.data),
        dev_per_language=args.dev_per_language,
        max_train_per_language=args.max_pairs_per_language,
        max_english_only=args.max_english_only,
        seed=args.seed,
        filters=FilterConfig(
            max_translations_per_english=args.max_translations_per_english,
            max_ui_share=args.max_ui_share,
        ),
    )
    try:
        if args.apt_update:
            update_indexes()
        card = build(
            config,
            fetcher=default_fetcher(args.cache_dir),
            command="python -m training.corpus " + " ".join(argv),
        )
    except PackageError as exc:
        raise SystemExit(str(exc)) from None
    print((args.output / "DATA_CARD.md").read_text())
    print(f"wrote {args.output} in {card['wall_time_s']} s")


if __name__ == "__main__":
    main()
