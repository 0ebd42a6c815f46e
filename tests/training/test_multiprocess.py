"""`torchrun --nproc_per_node 2 -m training.distill` on CPU (gloo): the two processes
split the batches, and the main process alone evaluates, saves and exports (about 1 min on
a 2-core machine: two real runs, the second resumed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from tests.conftest import SHARED_DATA
from tests.training.conftest import PAIRS

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("POLYGLOT_DATA", SHARED_DATA))
N_PAIRS = 64
BATCH = 8


def write_pairs(path: Path) -> None:
    """64 en-de pairs: the first rows of the stsb-multi-mt train split when the shared data
    is there ($POLYGLOT_DATA or ../shared/data), else the in-test pairs repeated with a
    numbered suffix."""
    en_file, de_file = (
        SHARED / "stsb-multi-mt" / f"stsb-{lang}-train.csv" for lang in ("en", "de")
    )
    if en_file.is_file() and de_file.is_file():
        with en_file.open(newline="") as en, de_file.open(newline="") as de:
            pairs = [(a[0], b[0]) for a, b in zip(csv.reader(en), csv.reader(de))][:N_PAIRS]
    else:
        pairs = [(f"{en} ({i})", f"{de} ({i})") for i in range(4) for en, de in PAIRS]
    path.write_text("".join(f"{en}\t{de}\n" for en, de in pairs))


def write_eval_data(root: Path) -> None:
    """A tiny STS and Tatoeba set (en-de, 8 rows) so that the final evaluation runs."""
    sts, tatoeba = root / "stsb-multi-mt", root / "tatoeba"
    sts.mkdir(parents=True)
    tatoeba.mkdir()
    for lang, column in (("en", 0), ("de", 1)):
        with (sts / f"stsb-{lang}-test.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            for i, pair in enumerate(PAIRS[:8]):
                writer.writerow([pair[column], PAIRS[i + 8][column], i % 5])
    (tatoeba / "tatoeba.deu-eng.deu").write_text("".join(de + "\n" for _, de in PAIRS[:8]))
    (tatoeba / "tatoeba.deu-eng.eng").write_text("".join(en + "\n" for en, _ in PAIRS[:8]))


def torchrun(tmp_path: Path, *extra: str) -> str:
    """Run the issue's command under `torchrun --nproc_per_node 2`; its combined log."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "training.distill", "--train", str(tmp_path / "pairs-en-de.tsv"),
        "--student", "teacher", "--student-layers", "2", "--projection", "none",
        "--batch-size", str(BATCH), "--device", "cpu", "--max-seq-length", "32",
        "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
        "--data", str(tmp_path / "data"), "--languages", "de", "--save-steps", "4", *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow
def test_two_processes_split_the_data_and_write_once(tmp_path):
    write_pairs(tmp_path / "pairs-en-de.tsv")
    write_eval_data(tmp_path / "data")
    output = tmp_path / "out"

    log = torchrun(tmp_path, "--epochs", "1", "--export", "fp32")
    assert log.count("process 1 of 2") == 1  # really two processes
    assert log.count(f"Saving model to {output}\n") == 1
    assert log.count("exported ") == 1 and log.count("/onnx/model.onnx") == 1
    assert log.count("teacher embeddings: encoding") == 1  # the main process's cache
    assert "[rank 1] training.teacher_cache: teacher embeddings:" in log  # read, not encoded
    for name in ("teacher", "student-before", "student"):
        assert log.count(f"evaluated {name} in") == 1
    assert "waiting for the main process to write the outputs" in log
    run_info = json.loads((output / "eval" / "run.json").read_text())
    samples = run_info["samples"]
    # one process would take ceil(samples / 8) steps; two take half the batches each
    # (DDP drops the uneven last batch)
    assert run_info["train_steps"] == samples // (2 * BATCH)
    assert run_info["train_steps"] < -(-samples // BATCH)
    assert run_info["languages"] == {"de": N_PAIRS}
    model = SentenceTransformer(str(output), device="cpu")
    vectors = model.encode(["Der Hund spielt im Garten.", "The dog plays in the garden."])
    assert vectors.shape == (2, 384) and np.all(np.isfinite(vectors))
    assert (output / "README.md").is_file() and (output / "onnx" / "model.onnx").is_file()

    # --resume: the main process picks the checkpoint, both continue from it
    first_steps = run_info["train_steps"]
    log = torchrun(tmp_path, "--epochs", "2", "--resume", "--skip-eval", "--export", "none")
    assert log.count("resuming from") == 1
    assert log.count(f"Saving model to {output}\n") == 1
    resumed = json.loads((output / "eval" / "run.json").read_text())
    assert resumed["resumed_from"].endswith(f"checkpoint-{first_steps}")
    assert resumed["train_steps"] == 2 * first_steps
