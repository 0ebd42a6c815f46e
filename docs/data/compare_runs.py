"""Each run's evaluation (`eval/student.json` of `training.distill`, or the JSON of
`training.evaluate --output`) against run 3, the issue-17 reference, and the issue's targets.

    python docs/data/compare_runs.py run6=runs/run6-stsb-2epochs/eval/student.json \
        run8=runs/run8-run6-plus-prose/eval/student.json

Prints a markdown table (run 3, each run, each run - run 3) of every figure run 3 recorded,
then per run the figures more than 1 point below run 3 (the issue's rule) and the targets
(en-xx >= 76 for de/es/fr/it, en-en >= 81.0, Tatoeba student(xx) -> teacher(eng) >= 90 %).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = Path(__file__).with_name("run3_reference.json")
GROUPS = {
    "sts": "STS",
    "sts_cross_space": "STS teacher(en) vs student",
    "tatoeba": "Tatoeba student both sides",
    "tatoeba_cross_space": "Tatoeba student -> teacher",
}
TARGETS = [("sts", k, 76.0) for k in ("en-de", "en-es", "en-fr", "en-it")]
TARGETS += [("sts", "en-en", 81.0)]
TARGETS += [("tatoeba_cross_space", f"{k}->eng", 90.0) for k in ("deu", "spa", "fra", "ita")]


def main(args: list[str]) -> None:
    reference = json.loads(REFERENCE.read_text())
    runs = {}
    for arg in args:
        name, _, path = arg.partition("=")
        runs[name] = json.loads(Path(path).read_text())
    names = list(runs)
    print(
        "| metric | run 3 | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} - run 3" for n in names)
        + " |"
    )
    print("|---" * (2 + 2 * len(names)) + "|")
    for group, label in GROUPS.items():
        for key, ref in reference[group].items():
            values = [runs[n][group][key] for n in names]
            cells = [f"{v:.1f}" for v in values] + [f"{v - ref:+.1f}" for v in values]
            print(f"| {label} {key} | {ref:.1f} | " + " | ".join(cells) + " |")
    for name in names:
        losses = [
            f"{GROUPS[g]} {k} {runs[name][g][k] - ref:+.1f}"
            for g in GROUPS
            for k, ref in reference[g].items()
            if runs[name][g][k] < ref - 1.0
        ]
        missed = [
            f"{k} {runs[name][g][k]:.1f} < {t}" for g, k, t in TARGETS if runs[name][g][k] < t
        ]
        print(f"\n{name}: more than 1 point below run 3: {', '.join(losses) or 'none'}")
        print(f"{name}: targets missed: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
