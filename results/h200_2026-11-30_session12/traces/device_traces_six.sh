#!/bin/bash
set -u
export PYTHONUNBUFFERED=1
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-*.whl /tmp/etap_wheels/
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
export PYTHONPATH=/tmp/cs:$PWD
i=0
for a in "" "--ctx 8192" "--b 64 --ctx 4096" "--kv fp8" "--kv fp8 --ctx 8192" "--b 1"; do
  i=$((i+1)); echo "=== $a" >> $OUT/traces.txt
  timeout 200 python3 scripts/trace_case.py $a --timeline 10:12 --ctas /tmp/ctas_$i.csv >> $OUT/traces.txt 2>&1
  (echo "=== $a"; cat /tmp/ctas_$i.csv) >> $OUT/ctas.csv
done
grep -E "===|all CTAs" $OUT/traces.txt
