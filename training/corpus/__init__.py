"""Parallel-corpus builder: English -> translation pairs from real translated text that
Debian ships (downloaded with `apt-get download`, unpacked with `dpkg-deb -x`, never
installed), filtered and written in the TSV format `training.distill --train` reads.

    python -m training.corpus build --languages de,es,fr,it --output corpus

Modules: `debian` (fetch and unpack), one module per source (`libreoffice_help`,
`gettext`), `filters`, `evalsets` (sentences to exclude), `build`, `card` (the data card).
"""
