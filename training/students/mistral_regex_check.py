"""Is transformers' "incorrect regex pattern ... set `fix_mistral_regex=True`" warning true
for a model folder's tokenizer? Compares token ids on the evaluation sets (stsb-multi-mt
test, every language; every Tatoeba file) of: the tokenizer as transformers loads it, the
folder's tokenizer.json read by `tokenizers` directly, and that tokenizer with the
pre-tokenizer `fix_mistral_regex=True` installs (Mistral's Split regex) in front of its own.
The results for the offline e5 student are in service/tokenizer_warning.py.

    python -m training.students.mistral_regex_check --model models/e5-small-offline \
        --data ../shared/data
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

# the pattern transformers 4.57.6 installs with fix_mistral_regex=True
MISTRAL_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def evaluation_texts(data: Path) -> dict[str, list[str]]:
    """Every sentence of the stsb-multi-mt test files and the Tatoeba files, by file name."""
    texts = {}
    for path in sorted((data / "stsb-multi-mt").glob("stsb-*-test.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        texts[path.name] = [r[0] for r in rows] + [r[1] for r in rows]
    for path in sorted((data / "tatoeba").glob("tatoeba.*")):
        texts[path.name] = path.read_text(encoding="utf-8").splitlines()
    return texts


def compare(model: Path, data: Path) -> dict:
    """Counts of sentences whose ids agree (see the module docstring)."""
    import tokenizers
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(model))
    try:
        AutoTokenizer.from_pretrained(str(model), fix_mistral_regex=True)
        flag = "loads"
    except Exception as exc:  # noqa: BLE001 - what the flag does is the finding
        flag = f"{type(exc).__name__}: {exc}"
    shipped = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    patched = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(MISTRAL_REGEX), behavior="isolated")
    patched.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([split, shipped.pre_tokenizer])
    files = evaluation_texts(data)
    total = same_shipped = same_patched = 0
    for lines in files.values():
        ids = loaded(lines)["input_ids"]
        total += len(lines)
        same_shipped += sum(a == b.ids for a, b in zip(ids, shipped.encode_batch(lines)))
        same_patched += sum(a == b.ids for a, b in zip(ids, patched.encode_batch(lines)))
    return {
        "files": len(files),
        "sentences": total,
        "fix_mistral_regex=True": flag,
        "same ids as tokenizer.json": same_shipped,
        "changed by the Mistral regex": total - same_patched,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    for key, value in compare(args.model, args.data).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
