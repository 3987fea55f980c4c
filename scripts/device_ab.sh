#!/bin/bash
# A/B of two revisions on the device: this tree ("next") against another revision ("main") unpacked
# in .ab_base/ (ignored; carry it):  rm -rf .ab_base && mkdir .ab_base && git archive REV | tar -x -C .ab_base
# Both are built side by side. TESTK: a pytest -k expression run on next first (decode suites,
# bf16 and e4m3); the timing is skipped if it fails. Then the quick grid (--rounds 2, FlashMLA as
# the same-process reference) runs as separate processes in the order next, main, next, main.
# KVS: cache dtypes (default "bf16 fp8"); WHERE: a bench_decode.py --where filter; VARIANTS: its
# --variants (e.g. heads_on_m=0). The tables go to stdout, prefixed next1/main1/next2/main2, and
# one file per dtype to $OUT (the device returns at most 8 files).
set -u
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-*.whl /tmp/etap_wheels/ 2>/dev/null
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
export ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so MAX_JOBS=8 PYTHONUNBUFFERED=1
ROOT=$PWD
t0=$SECONDS
(cd $ROOT && PYTHONPATH=/tmp/cs:$ROOT python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" > /tmp/build_next.log 2>&1 || tail -20 /tmp/build_next.log) &
(cd $ROOT/.ab_base && PYTHONPATH=/tmp/cs:$ROOT/.ab_base python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" > /tmp/build_main.log 2>&1 || tail -20 /tmp/build_main.log) &
wait
echo "built both: $((SECONDS - t0)) s"
if [ -n "${TESTK:-}" ]; then
  ETAP_REQUIRE_GPU=1 PYTHONPATH=/tmp/cs:$ROOT timeout 300 python3 -m pytest -q -x -p no:warnings \
    tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py -k "$TESTK" > /tmp/ab_tests.log 2>&1
  rc=$?
  tail -4 /tmp/ab_tests.log
  echo "tests on next: exit $rc, $((SECONDS - t0)) s"
  [ $rc = 0 ] || { tail -40 /tmp/ab_tests.log; exit 1; }
fi
for KV in ${KVS:-bf16 fp8}; do
 for i in 1 2; do
  for t in next main; do
   d=$ROOT; [ $t = main ] && d=$ROOT/.ab_base
   (cd $d && PYTHONPATH=/tmp/cs:$d timeout 200 python3 scripts/bench_decode.py --grid quick --kv $KV --peers flashmla \
      --rounds 2 --out /tmp/ab_$t$i ${WHERE:+--where "$WHERE"} ${VARIANTS:+--variants "$VARIANTS"} \
      > /tmp/ab_${KV}_${t}_$i.log 2>&1; grep -E '\|' /tmp/ab_${KV}_${t}_$i.log | sed "s/^/$t$i /" | tee -a $OUT/ab_${KV}.txt \
      || tail -5 /tmp/ab_${KV}_${t}_$i.log)
  done
 done
 echo "$KV timed: $((SECONDS - t0)) s"
done
