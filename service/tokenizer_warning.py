"""Silence transformers' false "incorrect regex pattern ... `fix_mistral_regex=True`"
warning for tokenizers that are not Mistral's, and nothing else.

transformers 4.57.3 to 4.x warns on loading, offline, ANY local model folder whose
config.json was written by a transformers release after 4.57.2 (its check of the model
type only applies to older folders): the offline e5 student (`training.students.e5_offline`)
and every student this project trains and saves. The warning concerns Mistral's BPE
pre-tokenizer regex. Measured on the offline e5 student (an XLM-R SentencePiece Unigram
tokenizer with a Metaspace pre-tokenizer, config model_type "bert"), on every sentence of
the evaluation sets (stsb-multi-mt test in all 11 languages and all 224 Tatoeba files:
208,092 sentences; transformers 4.57.6, tokenizers 0.22.2; `python -m
training.students.mistral_regex_check --model models/e5-small-offline`, docs/training.md):

- the tokenizer transformers loads gives the same ids as its tokenizer.json read by
  `tokenizers` directly for 208,092 of 208,092 sentences: nothing is incorrect;
- `fix_mistral_regex=True` does not load at all (TypeError: the Metaspace pre-tokenizer
  does not support item assignment);
- Mistral's regex put in front of the Metaspace pre-tokenizer, what the flag would do,
  changes the ids of 97.6 % of the sentences (e.g. "Haar." -> "▁Haar", "▁", "."), ids the
  model was never trained on.

So the warning is dropped for folders whose config.json names a model type outside
Mistral's family; a Mistral-family folder, or one without a readable config.json, still
warns.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

# the logger transformers warns on (transformers.utils.logging names loggers by module)
TRANSFORMERS_LOGGER = "transformers.tokenization_utils_base"
MARKER = "fix_mistral_regex=True"
# the model types transformers itself treats as Mistral tokenizers (its own list)
MISTRAL_MODEL_TYPES = frozenset({"mistral", "mistral3", "voxtral", "ministral", "pixtral"})
_FOLDER = re.compile(r"loading from '([^']+)'")


def model_type(folder: str | Path) -> str | None:
    """`model_type` of `folder/config.json`, or None when there is none or it is unreadable."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


class FalseMistralRegexWarning(logging.Filter):
    """Drops the `fix_mistral_regex` warning when the folder it names holds a model type
    outside `MISTRAL_MODEL_TYPES`; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if MARKER not in message:
            return True
        match = _FOLDER.search(message)
        kind = model_type(match.group(1)) if match else None
        return kind is None or kind in MISTRAL_MODEL_TYPES


def install() -> None:
    """Add the filter to transformers' tokenizer logger (once per process)."""
    logger = logging.getLogger(TRANSFORMERS_LOGGER)
    if not any(isinstance(f, FalseMistralRegexWarning) for f in logger.filters):
        logger.addFilter(FalseMistralRegexWarning())
