#!/usr/bin/env bash
# Per-thread CPU of the default server over 10 s in the middle of a 32 x 8 short load
# (docs/benchmarks.md, "Fourth session"). Run from the repository root: bash docs/data/scripts/thread-cpu-32x8.sh
# PREFIX="env TOKENIZERS_PARALLELISM=false" runs the server with that variable.
set -u
source .venv/bin/activate
${PREFIX:-} python -m service --port 8252 --max-queued-inputs 100000 --max-queue-wait-s 50 > /tmp/srv.log 2>&1 &
SP=$!
for i in $(seq 60); do curl -sf localhost:8252/health >/dev/null && break; sleep 0.5; done
python -m benchmarks.load --url http://localhost:8252 --route /embed --concurrency 32 --inputs 8 --length short --duration 16 --requests 100000 --client raw >/dev/null 2>&1 &
LP=$!
sleep 3
m() { curl -s localhost:8252/metrics | awk '/^embed_batch_size_sum/{s=$2} /^embed_batch_size_count/{c=$2} /^embed_input_tokens_total/{t=$2} /^embed_batch_tokens_sum/{p=$2} END{print s, c, t, p}'; }
snap() { for t in /proc/$SP/task/*; do echo "$(basename $t) $(awk '{print $14+$15}' $t/stat)"; done; }
A=$(m); snap > /tmp/s1; T1=$(date +%s.%N)
sleep 10
B=$(m); snap > /tmp/s2; T2=$(date +%s.%N)
wait $LP; kill $SP
python3 - "$A" "$B" "$T1" "$T2" <<'P'
import sys
a=list(map(float,sys.argv[1].split())); b=list(map(float,sys.argv[2].split())); secs=float(sys.argv[4])-float(sys.argv[3])
texts=b[0]-a[0]; batches=b[1]-a[1]; tokens=b[2]-a[2]; padded=b[3]-a[3]
print(f"texts/s {texts/secs:.1f} mean batch {texts/batches:.1f} padding {padded/tokens:.3f} tokens/text {tokens/texts:.1f}")
A={}; B={}
for f,d in (('/tmp/s1',A),('/tmp/s2',B)):
    for l in open(f):
        n,v=l.split(); d[n]=int(v)
tot=0
for k in B:
    dt=(B[k]-A.get(k,0))/100
    tot+=dt
    if dt>0.05: print(f"{k:8} {dt:6.2f} cpu-s {dt/secs*100:5.1f}% {dt/texts*1000:.3f} ms/text")
print(f"all {tot/texts*1000:.3f} ms/text")
P
