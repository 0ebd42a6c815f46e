"""Find and vet the trainer's checkpoints before `--resume` trusts one."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)
REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be resumed from."""


def checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders, newest (highest step) first."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir() if p.is_dir() and checkpoint_step(p) >= 0]
    return sorted(found, key=checkpoint_step, reverse=True)


def validate_checkpoint(path: Path) -> None:
    """Raise CorruptCheckpointError naming what is missing or unreadable."""
    for name in REQUIRED:
        if not (path / name).is_file():
            raise CorruptCheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        int(state["global_step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path}: trainer_state.json unreadable ({exc})"
        ) from exc
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        raise CorruptCheckpointError(f"checkpoint {path} has no model weights")
    import torch

    for file in [path / "optimizer.pt", *[w for w in weights if w.suffix == ".bin"]]:
        try:
            torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means unusable
            raise CorruptCheckpointError(
                f"checkpoint {path}: {file.name} is corrupt ({exc})"
            ) from exc
    for file in [w for w in weights if w.suffix == ".safetensors"]:
        try:
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                    handle.get_tensor(key)
        except Exception as exc:  # noqa: BLE001
            raise CorruptCheckpointError(
                f"checkpoint {path}: {file.name} is corrupt ({exc})"
            ) from exc


def latest_valid_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that passes validation. A newer one that is incomplete or
    corrupt (e.g. the run was killed while saving it) is reported by name and skipped;
    when every checkpoint is bad, CorruptCheckpointError lists why."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    problems = []
    for checkpoint in checkpoints:
        try:
            validate_checkpoint(checkpoint)
        except CorruptCheckpointError as exc:
            log.warning("skipping %s", exc)
            problems.append(str(exc))
            continue
        log.info("resuming from %s", checkpoint)
        return checkpoint
    raise CorruptCheckpointError(
        "no usable checkpoint to resume from: "
        + "; ".join(problems)
        + " (delete the folder to start over)"
    )
