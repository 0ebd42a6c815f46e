"""A small rule-based sentence splitter for prose paragraphs (English and the European and
CJK languages the corpus covers). It only has to be good enough for two uses: splitting
English-only text (State of the Union speeches) and splitting an aligned paragraph pair
into sentence pairs, which `split_pair` does only when both sides give the same number of
sentences (a wrong split then almost always shows up as a count mismatch)."""

from __future__ import annotations

import re

# a sentence ends with . ! ? (and any closing quotes or brackets) before whitespace and an
# opening quote/bracket or an upper-case letter or digit; or with CJK full stops
_BOUNDARY = re.compile(
    r"(?<=[.!?])([\"'”’»)\]]*)\s+(?=[\"'“‘«(\[¿¡]?[^\W_a-zß-ÿа-яα-ω])|(?<=[。！？])\s*(?=\S)"
)
# tokens ending in "." that do not end a sentence
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "gov", "sen", "rep", "col",
    "lt", "capt", "no", "nos", "vol", "fig", "e.g", "i.e", "etc", "vs", "cf", "approx",
    "z.b", "bzw", "ca", "usw", "ggf", "evtl", "nr", "p.ex", "ex", "sig", "ecc", "pág",
}  # fmt: skip


def _is_abbreviation(before: str) -> bool:
    token = before.rsplit(None, 1)[-1] if before.strip() else ""
    if not token.endswith("."):
        return False
    word = token.rstrip(".").lstrip("(\"'“‘«").casefold()
    # "U.S." and initials such as "J." are abbreviations, not sentence ends
    return word in _ABBREVIATIONS or bool(re.fullmatch(r"(\w\.)*\w", word)) and len(word) <= 4


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` (whitespace collapsed), in order; `[text]` when it has one."""
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.start() + len(match.group(1) or "")
        if match.group(0).strip() == "" and _is_abbreviation(text[start:end]):
            continue
        if end > start and text[start:end].strip():
            sentences.append(text[start:end].strip())
            start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_pair(english: str, translation: str) -> list[tuple[str, str]]:
    """Sentence pairs of an aligned paragraph pair when both sides split into the same
    number of sentences, else the paragraph pair itself."""
    left, right = split_sentences(english), split_sentences(translation)
    if len(left) > 1 and len(left) == len(right):
        return list(zip(left, right))
    return [(" ".join(english.split()), " ".join(translation.split()))]
