#!/usr/bin/env bash
# Every InferenceSession.run of a job timed: when the first starts and the last ends in the
# loop, and how busy the two threads are (docs/benchmarks.md, "Fourth session" of indexing).
# Run from the repository root: bash docs/data/scripts/job-trace.sh CORPUS.jsonl OUT_DIR
set -u
rm -rf "$2"
PYTHONPATH=. .venv/bin/python - embed "$1" --output "$2" --text-field text --id-field id <<'EOF'
import time, threading, sys
import onnxruntime as ort
from service.bulk import job as J
calls=[]
orig=ort.InferenceSession.run
def run(self,*a,**k):
    s=time.perf_counter(); r=orig(self,*a,**k); calls.append((s,time.perf_counter())); return r
ort.InferenceSession.run=run
orig_loop=J._local_loop
marks={}
def loop(*a,**k):
    marks['start']=time.perf_counter(); r=orig_loop(*a,**k); marks['end']=time.perf_counter(); return r
J._local_loop=loop
from service.bulk.__main__ import main
try: main(sys.argv[1:])
except SystemExit: pass
s=marks['start']; e=marks['end']
calls.sort()
busy=sum(b-a for a,b in calls)
print(f"loop {e-s:.3f}s first inference at {calls[0][0]-s:.3f}s last ends {e-max(b for a,b in calls):.3f}s before loop end; busy {busy:.2f} thread-s = {busy/2/(e-s):.3f} of 2 threads; calls {len(calls)}")
EOF
