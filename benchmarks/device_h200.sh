#!/usr/bin/env bash
# Issue 16's, 17's and 23's GPU figures in ONE command on a GPU host lent through the device
# tool (nvidia-h200: CPython 3.12, torch CUDA, no network), about 6 minutes, under 10:
#   env    nvidia-smi, glibc, Python and package versions (which copy is imported), imports
#   gpu    python -m benchmarks.gpu --random-weights --device cuda: 1/32/128 clients x 1 short,
#          32 x 32 passages, 15 s each, each row next to the in-process ceiling
#   train  python -m benchmarks.train_speed --device cuda --student e5 --random-weights:
#          plain loop, old and new input paths, batch 128
#   bulk   python -m benchmarks.bulk_speed --random-weights --backend torch --device cuda:
#          the indexing job (issue 23) beside the in-process pipeline and
#          sentence-transformers encode, 20,000 short texts, one round
# Every step has its own timeout and writes under $OUT; a failing step does not stop the later
# ones. Files in $OUT (8, the tool returns 8 at most): summary.txt (wheel install, each step's
# exit status and seconds), env.txt, dmon.txt (nvidia-smi dmon, 1 s), gpu.log, gpu.json,
# train.log, train_speed.json, bulk.log (its JSON rows). Exit status: the number of failed
# steps.
#
# Before the run, here (PyPI reachable): bash benchmarks/device_prepare.sh (fills .whl and
# .devcarry). The run (docs/benchmarks.md, "GPU-class serving"):
#   command "bash benchmarks/device_h200.sh", carry [".whl", ".devcarry"], timeout_s 600
# A rerun of some steps only: "STEPS='train' bash benchmarks/device_h200.sh".
# Rehearsal on a CPU (tiny durations, device cpu, the MiniLM skeleton as the student unless
# REHEARSAL_STUDENT=e5, OUT default benchmarks/results/device-rehearsal):
#   PYTHON=.venv/bin/python nice -n 10 bash benchmarks/device_h200.sh --cpu-rehearsal
set -u -o pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
    --cpu-rehearsal) MODE=cpu ;;
    "") ;;
    *) echo "usage: $0 [--cpu-rehearsal]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
STEPS=${STEPS:-env gpu train bulk}
CARRY=${CARRY_DIR:-.devcarry}
MINILM=$CARRY/models/all-MiniLM-L6-v2
E5=$CARRY/models/e5-small
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [ "$MODE" = gpu ]; then
    OUT=${OUT:?OUT must name the folder for the results (the device tool sets it)}
    DEVICE=cuda
    GPU_ARGS=(--duration 15)
    TRAIN_ARGS=(--pairs 8192 --batch-size 128 --steps 150 --warmup 20 --max-seq-length 128)
    BULK_ARGS=(--n 20000)
    LIMIT_ENV=60 LIMIT_GPU=220 LIMIT_TRAIN=180 LIMIT_BULK=90
else
    OUT=${OUT:-benchmarks/results/device-rehearsal}
    DEVICE=cpu
    GPU_ARGS=(--quick --duration 1)
    TRAIN_ARGS=(--pairs 16 --batch-size 4 --steps 2 --warmup 0 --max-seq-length 32)
    BULK_ARGS=(--n 256)
    LIMIT_ENV=90 LIMIT_GPU=180 LIMIT_TRAIN=300 LIMIT_BULK=300  # a 2-core VM shared with other work
    # the same code path with the 6-layer skeleton as the "e5" student (e5's 118M parameters
    # take minutes per step on a loaded 2-core VM); REHEARSAL_STUDENT=e5 rehearses e5 itself
    [ "${REHEARSAL_STUDENT:-minilm}" = e5 ] || E5=$MINILM
fi
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
echo "device_h200.sh mode=$MODE steps='$STEPS' started $(date -u +%FT%TZ)" >"$SUMMARY"

# The carried wheels first on the path (the device README's recipe). In the rehearsal the venv
# already holds these versions; the wheels (CPython 3.12) are only checked to install together.
if compgen -G ".whl/*.whl" >/dev/null; then
    if [ "$MODE" = gpu ]; then
        timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl >>"$SUMMARY" 2>&1 &&
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        RC=$?
    else
        DRY=$(mktemp -d)
        "$PY" -m pip install -q --dry-run --ignore-installed --no-index --no-deps \
            --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux1_x86_64 --target "$DRY" .whl/*.whl >>"$SUMMARY" 2>&1
        RC=$?
        rmdir "$DRY"
    fi
    echo "wheels: install rc=$RC ($(ls .whl/*.whl | wc -l) files) PYTHONPATH=${PYTHONPATH:-}" \
        | tee -a "$SUMMARY"
else
    echo "wheels: none in .whl (run benchmarks/device_prepare.sh first)" | tee -a "$SUMMARY"
fi

DMON=
if command -v nvidia-smi >/dev/null; then
    nvidia-smi dmon -s umc -d 1 >"$OUT/dmon.txt" 2>&1 &
    DMON=$!
fi

FAILED=0
step() {  # step NAME LIMIT_S LOG COMMAND...: run if named in STEPS, log, record rc and seconds
    local name=$1 limit=$2 log=$3 started=$SECONDS rc
    shift 3
    case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: timeout ${limit}s, $(date -u +%T)"
    timeout -k 30 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    echo "$name rc=$rc seconds=$((SECONDS - started))$([ "$rc" -eq 124 ] && echo ' (timed out)')" \
        | tee -a "$SUMMARY"
}

environment() {
    date -u
    nvidia-smi || echo "nvidia-smi: not available"
    ldd --version 2>&1 | head -1
    nproc
    "$PY" - <<'EOF'
import importlib
import sys

print(sys.version, sys.executable)
for name in ("torch", "transformers", "sentence_transformers", "tokenizers", "huggingface_hub",
             "fastapi", "starlette", "pydantic", "pydantic_settings", "uvicorn", "httptools",
             "uvloop", "orjson", "zmq", "msgpack", "prometheus_client", "array_api_compat",
             "datasets", "fsspec", "numpy", "scipy", "onnxruntime", "httpx", "psutil",
             "pynvml", "accelerate", "safetensors", "typing_extensions"):
    try:
        module = importlib.import_module(name)
        print(f"{name:22} {getattr(module, '__version__', '?'):14} {module.__file__}")
    except Exception as exc:  # noqa: BLE001 - record and go on
        print(f"{name:22} MISSING        {type(exc).__name__}: {exc}")
import torch

if torch.cuda.is_available():
    print("cuda", torch.version.cuda, torch.cuda.get_device_name(0),
          "bf16", torch.cuda.is_bf16_supported())
for module in ("service.app", "service.supervisor", "benchmarks.gpu", "benchmarks.train_speed",
               "training.trainer", "service.bulk.job", "benchmarks.bulk_speed", "pyarrow"):
    importlib.import_module(module)
print("project imports: ok")
EOF
}

export PY
step env "$LIMIT_ENV" env.txt bash -c "$(declare -f environment); environment"
step gpu "$LIMIT_GPU" gpu.log "$PY" -m benchmarks.gpu --random-weights --model "$MINILM" \
    --device "$DEVICE" "${GPU_ARGS[@]}" --output "$OUT/gpu.json"
step train "$LIMIT_TRAIN" train.log "$PY" -m benchmarks.train_speed --device "$DEVICE" \
    --student e5 --student-dir "$E5" --teacher "$MINILM" --random-weights \
    --data "$CARRY/data" --paths plain,old,new "${TRAIN_ARGS[@]}" --output "$OUT/train_speed.json"
step bulk "$LIMIT_BULK" bulk.log env POLYGLOT_DATA="$CARRY/data" "$PY" -m benchmarks.bulk_speed \
    --model "$MINILM" --random-weights --backend torch --device "$DEVICE" --kind short \
    "${BULK_ARGS[@]}" --rounds 1 --contenders pipeline,job,st --output /tmp/bulk_speed.json

[ -n "$DMON" ] && kill "$DMON" 2>/dev/null
echo "failed steps: $FAILED, finished $(date -u +%FT%TZ)" | tee -a "$SUMMARY"
exit "$FAILED"
