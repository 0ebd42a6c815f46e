"""Indexing a corpus with the served pipeline, without HTTP: read (JSONL / Parquet / CSV /
a folder of text files) -> chunk by the model's tokens -> length-sorted batches -> the
served pipeline -> Parquet shards + manifest -> optional vector-store sink (LanceDB,
pgvector). `python -m service.bulk embed|search` (docs/indexing.md)."""
