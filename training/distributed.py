"""One distillation run across several processes (`torchrun --nproc_per_node N -m
training.distill ...` or `accelerate launch -m training.distill ...`).

The trainer splits the batches between the processes (DDP); everything else is done
once, by the main process (rank 0), through accelerate's `PartialState`, the state the
trainer itself uses:

- the teacher-embedding and token-id caches: the main process computes and writes them
  while the others wait, then the others read them (`main_first`);
- the projection fit: the main process fits it, the others receive the fit
  (`broadcast`) and set the same weights;
- the `--resume` checkpoint: the main process chooses it, the others receive its path;
- the evaluations, the model, its card, `eval/run.json` and the ONNX export: the main
  process only, while the others wait at a barrier (`finish`).

In a single process every helper here is a no-op (`broadcast` returns its argument).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a process waits at a barrier for the others (the process group's timeout):
# the main process alone encodes the teacher cache, evaluates and exports while the
# others wait, which takes far longer than torch's 30 min default on a CPU-only host.
TIMEOUT_S = 6 * 3600


def start(device: str):
    """accelerate's `PartialState` for this process (initialises the process group under
    torchrun / accelerate launch: gloo on `device` "cpu", NCCL on "cuda"), with
    `TIMEOUT_S` for every collective. The trainer later reuses this process group."""
    from accelerate import PartialState

    if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # accelerate would name each CPU process's device "cpu:0", and the trainer's
        # `--resume` then fails to load optimizer.pt onto it (torch.load knows no
        # "cpu:0" location); its own variable for the device keeps it plain "cpu".
        os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
    return PartialState(cpu=device == "cpu", timeout=timedelta(seconds=TIMEOUT_S))


def state():
    """The `PartialState` `start` set up (the trainer re-creates it on the same group)."""
    from accelerate import PartialState

    return PartialState()


def is_main() -> bool:
    """Whether this is the main process (rank 0), the one that writes the outputs."""
    return state().is_main_process


def rank() -> int:
    return state().process_index


def world_size() -> int:
    return state().num_processes


@contextmanager
def main_first() -> Iterator[None]:
    """The block runs in the main process first, then in the others (which find what
    the main process cached on disk)."""
    with state().main_process_first():
        yield


def broadcast(value: T) -> T:
    """The main process's `value` (any picklable object), in every process."""
    from accelerate.utils import broadcast_object_list

    if world_size() == 1:
        return value
    return broadcast_object_list([value])[0]


def wait_for_everyone() -> None:
    state().wait_for_everyone()


def finish() -> None:
    """The end of a successful run in every process: wait until the main process has
    written everything, then leave the process group (a run that fails exits non-zero
    instead, and torchrun stops the other processes)."""
    import torch.distributed as dist

    if world_size() > 1:
        if not is_main():
            log.info("process %d: waiting for the main process to write the outputs", rank())
        wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
