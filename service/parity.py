"""Parity checks of a built pipeline against reference vectors: the one definition of a
variant's report row, used by the start-up int8 check (service.variants) and the export
report (training.export_report) alike.

A row says how close a variant's vectors are to the reference on a fixed sample (mean and
minimum cosine), whether a text's vector stays the same inside batches of other texts
(batch invariance), the rule applied, and `passed`. The start-up choice serves only
variants whose row passed (`EMBED_ONNX_FILE=auto`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.engine.pooling import l2_normalize

# A fixed sample of real sentences (several languages, short and long).
SAMPLE = [
    "A man is playing a large flute.",
    "A woman is slicing an onion on a wooden board.",
    "Three men are playing chess in the park.",
    "The stock market fell sharply after the announcement of new tariffs.",
    "How do I reset my password if I no longer have access to my email account?",
    "Der Hund spielt im Garten.",
    "Ein Flugzeug hebt gerade ab.",
    "Die Regierung hat heute neue Maßnahmen zum Klimaschutz vorgestellt.",
    "Un hombre está tocando la guitarra.",
    "¿Dónde está la estación de tren más cercana?",
    "Le chat dort sur le canapé depuis ce matin.",
    "Les négociations ont repris à Bruxelles après une longue pause.",
    "Il treno per Roma parte alle nove.",
    "O gato está a dormir no sofá.",
    "De kinderen spelen buiten in de regen.",
    "Кошка спит на диване.",
    "北京是中国的首都。",
    "東京は日本の首都です。",
    "Rain.",
    "ok",
    "Retrieval-augmented generation combines a search index with a language model so that "
    "answers can cite the documents they were drawn from, which reduces hallucination and "
    "lets the system use knowledge that was not in the model's training data.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee will publish its findings in the spring.",
    "She forgot her umbrella at the restaurant.",
]
# Parity bars per kind: (statistic over the sample, bar), against the reference model.
BARS = {"fp32": ("min", 0.9999), "int8": ("min", 0.99), "fp16": ("mean", 0.999)}
INVARIANCE_BAR = 0.99999
INVARIANCE_PROBES = ["hello world", "Der Hund spielt im Garten.", "ok", SAMPLE[20]]
STS_KEEP_BAR = 0.99  # an int8 variant keeps >= 99 % of the reference's STS Spearman


class Encoder(Protocol):
    """What a check needs: service.engine.model.ModelPipeline, or a SentenceTransformer."""

    def encode(self, sentences: list[str], batch_size: int = 32) -> np.ndarray: ...


def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) row-wise cosine of two [n, dim] arrays."""
    cos = np.sum(l2_normalize(a) * l2_normalize(b), axis=1)
    return float(cos.mean()), float(cos.min())


def batch_invariance(encoder: Encoder) -> float:
    """Minimum cosine between a probe's vector encoded alone and the same probe inside
    batches of other texts (a short neighbour, a long one that pads it, the whole sample,
    probe first and last). 1.0 for a batch-invariant variant; the bar is INVARIANCE_BAR."""
    worst = 1.0
    for probe in INVARIANCE_PROBES:
        alone = encoder.encode([probe])[0][None, :]
        batches = [
            [probe, "a different text"],
            [SAMPLE[20], probe],
            [probe, *SAMPLE],
            [*SAMPLE[::-1], probe, "x"],
        ]
        for batch in batches:
            vectors = encoder.encode(batch, batch_size=len(batch))
            row = batch.index(probe)
            worst = min(worst, cosine_stats(vectors[row : row + 1], alone)[1])
    return worst


def judge(
    kind: str, mean: float, minimum: float, invariance: float, sts_ratio: float | None = None
) -> tuple[bool, str]:
    """(passed, rule) for one variant: its parity bar and the batch-invariance bar, plus for
    int8 the STS bar when STS was measured (`sts_ratio`: variant / reference Spearman)."""
    stat, bar = BARS[kind]
    value = minimum if stat == "min" else mean
    rule = f"{stat} cosine >= {bar} and batch invariance >= {INVARIANCE_BAR}"
    passed = value >= bar and invariance >= INVARIANCE_BAR
    if kind == "int8" and sts_ratio is not None:
        passed = passed and sts_ratio >= STS_KEEP_BAR
        rule += f" and STS >= {STS_KEEP_BAR:.0%} of torch"
    return passed, rule


def parity_row(
    encoder: Encoder, kind: str, reference: np.ndarray, sts_ratio: float | None = None
) -> dict:
    """The report row of one variant: `encoder`'s vectors of SAMPLE against `reference`
    (float32 [len(SAMPLE), dim]) and its batch invariance, judged by `judge`. Keys: kind,
    mean_cosine, min_cosine, batch_invariance, bar (the rule), passed."""
    mean, minimum = cosine_stats(encoder.encode(SAMPLE), reference)
    invariance = batch_invariance(encoder)
    passed, rule = judge(kind, mean, minimum, invariance, sts_ratio)
    return {
        "kind": kind,
        "mean_cosine": round(mean, 6),
        "min_cosine": round(minimum, 6),
        "batch_invariance": round(invariance, 7),
        "bar": rule,
        "passed": passed,
    }
