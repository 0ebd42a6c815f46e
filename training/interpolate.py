"""Weight-space interpolation of two students trained from the same start: every
floating-point weight becomes (1 - alpha) * a + alpha * b (WiSE-FT, Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models"; the uniform soup of Wortsman et al. 2022,
"Model soups", for two models).

    python -m training.interpolate --model-a runs/run6 --model-b runs/run8 --alpha 0.5 \\
        --output runs/run6-run8-mid

What it is for: a further run (b) continued from an earlier one (a) gains in one place and
loses in another (here: closer to the teacher's space, a little worse in the student's own
space); a point on the line between them trades the two without training. Both models must
have the same modules, weight names and shapes (ValueError naming the first difference);
non-float buffers (position ids) must be equal. The output is a sentence-transformers
folder (model a's modules and tokenizer, the mixed weights) with `interpolation.json`
naming the sources and alpha; evaluate it with `python -m training.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

RECORD = "interpolation.json"


def check_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """ValueError naming the first difference unless `a` and `b` (state dicts) have the
    same names and shapes and equal non-float tensors (position ids): what
    `interpolate_state` needs, checked without computing anything."""
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise ValueError(f"the models have different weights: {only[:3]} are in one model only")
    for name, left in a.items():
        right = b[name]
        if left.shape != right.shape:
            raise ValueError(f"{name}: shape {tuple(left.shape)} vs {tuple(right.shape)}")
        if not left.is_floating_point() and not torch.equal(left, right.to(left.device)):
            raise ValueError(f"{name}: non-float weights differ; the models are not the same shape")


def interpolate_state(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for every float tensor (computed in float32, stored in
    a's dtype); other tensors are copied from a and must equal b's. ValueError on different
    names, shapes or non-float values (`check_same_weights`), or alpha outside [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    check_same_weights(a, b)
    return {
        name: torch.lerp(left.float(), b[name].float(), alpha).to(left.dtype)
        if left.is_floating_point()
        else left.clone()
        for name, left in a.items()
    }


def interpolate(model_a: str, model_b: str, alpha: float, output: Path) -> Path:
    """Write the model at `alpha` between `model_a` (0) and `model_b` (1) to `output`."""
    from sentence_transformers import SentenceTransformer

    a = SentenceTransformer(model_a, device="cpu")
    b = SentenceTransformer(model_b, device="cpu")
    if [type(m).__name__ for m in a] != [type(m).__name__ for m in b]:
        raise ValueError(
            f"different modules: {[type(m).__name__ for m in a]} vs {[type(m).__name__ for m in b]}"
        )
    a.load_state_dict(interpolate_state(a.state_dict(), b.state_dict(), alpha))
    output = Path(output)
    a.save(str(output))
    record = {"model_a": str(model_a), "model_b": str(model_b), "alpha": alpha}
    (output / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s: %.2f of the way from %s to %s", output, alpha, model_a, model_b)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-a", required=True, help="folder of the start (alpha 0)")
    parser.add_argument("--model-b", required=True, help="folder of the further run (alpha 1)")
    parser.add_argument("--alpha", type=float, default=0.5, help="0..1 (default 0.5)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        interpolate(args.model_a, args.model_b, args.alpha, args.output)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
