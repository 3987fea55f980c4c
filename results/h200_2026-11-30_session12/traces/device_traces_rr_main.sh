#!/bin/bash
# traces in each tree: default, 8K, fp8
set -u
export PYTHONUNBUFFERED=1
ROOT=$PWD
for t in "rr=." "main=.ab_base"; do
  name=${t%%=*}; d=$ROOT/${t#*=}
  (cd $d && for a in "" "--ctx 8192" "--kv fp8"; do
     echo "=== $name $a"; PYTHONPATH=/tmp/cs:$PWD timeout 150 python3 scripts/trace_case.py $a --timeline 10:13 2>&1 | tail -60; done) > $OUT/trace_$name.txt 2>&1 &
done
wait
tail -c 5000 $OUT/trace_rr.txt
