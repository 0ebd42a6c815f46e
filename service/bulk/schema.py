"""The columns of every output row (Parquet shards and sinks alike).

id           string   the row's id: the document id, or "<doc_id>#<chunk_index>" when
                      chunking is on (--chunk-tokens)
doc_id       string   the document's id (--id-field, else a stable id from the input)
chunk_index  int32    0-based index of the chunk within its document
char_start   int64    the chunk's first character in the document text (Python str index)
char_end     int64    one past its last character
text         string   the chunk's text (only with --include-text)
vector       fixed_size_list<float32>[dim]
"""

from __future__ import annotations

import pyarrow as pa

ROW_FIELDS = ("id", "doc_id", "chunk_index", "char_start", "char_end")


def output_schema(dim: int, include_text: bool, metadata: dict[str, str] | None = None):
    """The pyarrow schema of the output rows for vectors of `dim` floats."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("char_start", pa.int64(), nullable=False),
        pa.field("char_end", pa.int64(), nullable=False),
    ]
    if include_text:
        fields.append(pa.field("text", pa.string()))
    fields.append(pa.field("vector", pa.list_(pa.float32(), dim), nullable=False))
    return pa.schema(fields, metadata=metadata)
